//! Batches to an HTTP endpoint, signed as Standard Webhooks: `POST {"events": [...]}` with
//! `webhook-id` (the batch's first event id, the same on every retry), `webhook-timestamp`
//! (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//! Anything but a 2xx answer within the timeout is a failure, retried by the sink.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::sink::Batch;

/// How long one delivery may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Webhook {
    url: String,
    key: hmac::Key,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str, key: Vec<u8>) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    pub async fn send(&self, batch: &Batch) -> Result<(), String> {
        let body = body(batch);
        let timestamp = wsgate::verify::now_unix();
        let signature = sign(&self.key, &batch.id, timestamp, &body);
        let res = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &batch.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        match res.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("{} answered {s}", self.url)),
        }
    }
}

/// `{"events":[…]}`, from events already serialized.
fn body(batch: &Batch) -> String {
    let mut body =
        String::with_capacity(batch.events.iter().map(|e| e.len() + 1).sum::<usize>() + 12);
    body.push_str("{\"events\":[");
    for (i, event) in batch.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
    body
}

/// The Standard Webhooks signature of one delivery: HMAC-SHA256 of `id.timestamp.body`, fed
/// in pieces (a batch's body is tens of kilobytes; it is not copied to be signed).
fn sign(key: &hmac::Key, id: &str, timestamp: u64, body: &str) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(format!(".{timestamp}.").as_bytes());
    ctx.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the Standard Webhooks specification (its README's "Verifying" section).
    #[test]
    fn signs_the_specifications_example() {
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
