"""Runs the Autobahn|Testsuite fuzzing-client cases (kosoku) against one WebSocket URL.

Prints one line per case that did not pass (`FAIL <case> <behavior> <close behavior>: <why>`),
one per case that passed non-strictly (`NON_STRICT <case>: <why>`, allowed by the suite: e.g. a
protocol error failed the connection before an echo already in flight came back), then
`passed N of M`. Exit status 0 only when every case run passed.
Usage: python3 run.py URL [--exclude CASE ...] [--parallelism N]"""

import argparse
import asyncio
import os
import sys

from kosoku import FailureError, run_fuzzingclient


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--parallelism", type=int, default=4)
    args = parser.parse_args()
    try:
        results = await run_fuzzingclient(
            args.url, ["*"], args.exclude, concurrency=args.parallelism
        )
    except FailureError as failure:
        results = failure.results
    failed = [case for case in results if not case.passed]
    for case in failed:
        print(f"FAIL {case.case_id} {case.behavior} {case.behavior_close}: {case.result}")
    for case in results:
        if case.passed and str(case.behavior).endswith("NON_STRICT"):
            print(f"NON_STRICT {case.case_id}: {case.result}")
    print(f"passed {len(results) - len(failed)} of {len(results)}")
    return 0 if results and not failed else 1


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without the interpreter's finalization: kosoku's native runtime sometimes aborts
    # (SIGABRT) while the interpreter tears down, after every result was printed, which would
    # turn a clean run into a failed one.
    os._exit(code)
