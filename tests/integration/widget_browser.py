#!/usr/bin/env python3
"""The widget page in headless Debian chromium (tests/browser/widget.test.mjs,
playwright-core from npm) against the real daemon, PostgreSQL and amisim.

Usage: widget_browser.py MISSEDCALLD AMISIM

amisim simulates one unanswered call from a known client's phone, held back
until a second AMI client logs in; the browser test logs in when the page
is live, so the popup is seen while it rings. Screenshots and what the page
showed go to $MCD_BUILD_ROOT/widget-browser/; the appeal number the page
showed must be the one in the database.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from widget_env import (AMI_SECRET, AMI_USER, CLIENT_NAME, SRC, TestFailure, WidgetEnv,  # noqa: E402
                        check)

MISSEDCALLD, AMISIM = sys.argv[1], sys.argv[2]
BROWSER_DIR = os.path.join(SRC, "tests", "browser")
ARTIFACTS = os.path.join(os.environ.get("MCD_BUILD_ROOT", "."), "widget-browser")


def main():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        print("FAIL: node is not installed (scripts/debian-packages lists nodejs)")
        return 1
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        print("FAIL: playwright-core is not installed: run `npm install` in tests/browser "
              "(scripts/test does)")
        return 1
    if not os.access("/usr/bin/chromium", os.X_OK):
        print("FAIL: /usr/bin/chromium is missing (scripts/debian-packages lists chromium)")
        return 1
    env = WidgetEnv(MISSEDCALLD, AMISIM, "widget_browser")
    try:
        env.setup()
        token = env.cli("--issue-token", "ivanov").stdout.strip()
        phones = os.path.join(env.tmp, "phones.txt")
        with open(phones, "w") as f:
            f.write("79161234567\n")
        env.start_amisim("--simulate", "--calls", "1", "--mix", "noanswer=1", "--phones", phones,
                         "--seed", "3", "--time-scale", "0.3", "--wait-clients", "2")
        env.start_daemon()
        env.wait_ready()
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        os.makedirs(ARTIFACTS)
        run_env = dict(os.environ, MCD_WIDGET_URL="http://127.0.0.1:%d" % env.widget_port,
                       MCD_WIDGET_TOKEN=token, MCD_AMI_PORT=str(env.ami_port), MCD_AMI_USER=AMI_USER,
                       MCD_AMI_SECRET=AMI_SECRET, MCD_CLIENT_NAME=CLIENT_NAME, MCD_ARTIFACTS=ARTIFACTS)
        r = subprocess.run([node, "--test", os.path.join(BROWSER_DIR, "widget.test.mjs")],
                           env=run_env, timeout=240, cwd=BROWSER_DIR)
        check(r.returncode == 0, "the browser test passed")
        seen = json.load(open(os.path.join(ARTIFACTS, "seen.json")))
        check(seen["number"] == env.psql("SELECT number FROM appeals"),
              "the page showed the appeal number that is in the database")
        for shot in ("widget-ringing.png", "widget-appeal.png"):
            check(os.path.getsize(os.path.join(ARTIFACTS, shot)) > 1000, "screenshot %s saved" % shot)
        print("widget_browser: all checks passed; screenshots in", ARTIFACTS)
        return 0
    except (TestFailure, subprocess.TimeoutExpired) as e:
        print("FAIL:", e)
        print("---- daemon log (tail) ----")
        print(env.log()[-6000:])
        return 1
    finally:
        env.close()


if __name__ == "__main__":
    sys.exit(main())
