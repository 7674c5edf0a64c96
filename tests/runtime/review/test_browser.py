"""`sftc review` in a real browser: Debian's chromium driven by selenium, headless, against
`sftc review` started as a process on a tiny real run. Keyboard-only review persists
across a reload, two reviewers at once both persist, and a generated `<script>` is text.

Skipped only when chromium (or its driver, or selenium) is missing and CI is unset; in CI
(`CI=true`) a missing browser is a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real run (~15 s) and two browsers: over the default suite's budget

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = "<script>alert(1)</script>"
LONG = " ".join(f"word{i:05d}" for i in range(2000))[:20000]  # a 20k-character answer
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _browser_or_skip():
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser test: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny real run with generated eval samples; then, as plain data, a baseline for the same
    rows and one generated answer that is markup (a tiny model will not write one by itself)."""
    _browser_or_skip()
    from tests.runtime.run_helpers import SPEC, write_project

    project = write_project(tmp_path_factory.mktemp("review_run"))
    (project / "tiny.sft").write_text(
        SPEC.replace("output {", "eval {\n    generate = greedy(max_new_tokens = 4)\n    samples = 6\n}\noutput {")
    )
    env = {**os.environ, "SFTC_CACHE": str(project / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sftlang.cli import main; sys.exit(main())", "run", "tiny.sft"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr[-3000:]  # 3: a gate rejected the run; its report is complete
    (run,) = sorted((project / "runs" / "tiny").iterdir())
    report = json.loads((run / "report.json").read_text())
    assert len(report["samples"]) == 6
    report["samples"][1]["generated"] = SCRIPT
    report["samples"][4]["generated"] = LONG
    report["baseline"] = {
        "kind": "base",
        "samples": [dict(s, generated=f"base answer {i}") for i, s in enumerate(report["samples"])],
    }
    (run / "report.json").write_text(json.dumps(report))
    return run


@pytest.fixture(scope="module")
def server(run_dir):
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from sftlang.cli import main; sys.exit(main())",
            "review",
            str(run_dir),
            "--port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = process.stdout.readline()
    assert line.startswith("review: http://127.0.0.1:"), line + process.stderr.read()
    yield line.split()[1]
    # SIGTERM stops it as Ctrl-C does (a process started in the background may ignore SIGINT;
    # Ctrl-C itself is tested in test_review_server.py)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browsers():
    opened = []

    def open_one():
        opened.append(_browser())
        return opened[-1]

    yield open_one
    for browser in opened:
        browser.quit()


def _wait(browser, condition, timeout=10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: condition(b))


def _sign_in(browser, url, name):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    field = browser.find_element(By.ID, "reviewer")
    field.send_keys(name, Keys.ENTER)  # the name is kept in a cookie and localStorage; the page reloads
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-reviewer") == name)
    _wait(browser, lambda b: b.switch_to.active_element.get_attribute("data-slot") == "tuned")


def _keys(browser, *keys):
    for key in keys:
        browser.switch_to.active_element.send_keys(key)


def _card(browser, row, slot):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"#row-{row} article[data-slot='{slot}']")


def test_keyboard_review_persists_after_reload(run_dir, server, browsers):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from runtime.review.store import ReviewStore

    browser = browsers()
    _sign_in(browser, server, "ann")
    _keys(browser, "4", "f", "e")  # score and flag the tuned answer, then edit the correction
    assert browser.switch_to.active_element.get_attribute("class") == "correction"
    _keys(browser, "the corrected answer", Keys.ESCAPE, Keys.ARROW_RIGHT, "2", Keys.ENTER)  # base answer: 2; save
    _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#row-0 .status").text == "saved")
    assert browser.switch_to.active_element == _card(browser, 1, "tuned")  # moved to the next row
    _keys(browser, "k", "j", "5", Keys.CONTROL + Keys.ENTER)  # k/j move back and forth; Ctrl-Enter saves row 1
    _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#row-1 .status").text == "saved")
    assert browser.find_element(By.ID, "progress-mine").text == "1"  # row 1 has no base score from ann yet

    browser.refresh()
    _wait(browser, lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-reviewer") == "ann")
    tuned, base = _card(browser, 0, "tuned"), _card(browser, 0, "base")
    assert (tuned.get_attribute("data-score"), tuned.get_attribute("data-flagged")) == ("4", "yes")
    assert base.get_attribute("data-score") == "2"
    assert (
        browser.find_element(By.CSS_SELECTOR, "#row-0 textarea.correction").get_attribute("value")
        == "the corrected answer"
    )
    assert _card(browser, 1, "tuned").get_attribute("data-score") == "5"
    current = {(j.row_id, j.answer): j for j in ReviewStore(run_dir).current("ann")}
    row0 = browser.find_element(By.CSS_SELECTOR, "#row-0").get_attribute("data-row")
    assert current[(row0, "tuned")].correction == "the corrected answer" and current[(row0, "base")].score == 2

    # the generated markup is text on the page; nothing ran
    assert _card(browser, 1, "tuned").find_element(By.CSS_SELECTOR, "pre.text").text == SCRIPT
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check


def test_two_reviewers_at_once_both_persist(run_dir, server, browsers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from runtime.review.store import ReviewStore

    ann, bob = browsers(), browsers()
    _sign_in(ann, server, "cy")
    _sign_in(bob, server, "dee")
    for browser, score in ((ann, "1"), (bob, "3")):  # both on the same row before either saves
        _keys(browser, "j", "j", score)
    _keys(ann, Keys.ENTER)
    _keys(bob, Keys.ENTER)
    for browser in (ann, bob):
        _wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#row-2 .status").text == "saved")
    time.sleep(0.2)
    row = ann.find_element(By.CSS_SELECTOR, "#row-2").get_attribute("data-row")
    scores = {j.reviewer: j.score for j in ReviewStore(run_dir).current() if j.row_id == row and j.answer == "tuned"}
    assert scores["cy"] == 1 and scores["dee"] == 3
    for browser, score in ((ann, "1"), (bob, "3")):
        browser.refresh()
        _wait(browser, lambda b, score=score: _card(b, 2, "tuned").get_attribute("data-score") == score)


def test_rows_moved_to_stay_below_the_sticky_header_and_long_answers_scroll_in_their_box(server, browsers):
    """With the Keys list open the header is compact, and `j`/`k` put the row they move to below
    it (not under it); a 20k-character answer's card has a capped height (its text scrolls). A
    name with an invisible character is refused, naming it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser = browsers()
    browser.get(server)
    browser.find_element(By.ID, "reviewer").send_keys("eve\u200b", Keys.ENTER)  # an invisible character: refused
    _wait(browser, lambda b: "U+200B ZERO WIDTH SPACE" in b.find_element(By.ID, "message").text)
    browser.find_element(By.ID, "reviewer").clear()
    _sign_in(browser, server, "eve")
    assert browser.find_element(By.CSS_SELECTOR, "header details.keys").get_attribute("open") is not None
    header = browser.find_element(By.CSS_SELECTOR, "body > header")
    assert header.rect["height"] <= 160, header.rect  # compact: the rows keep most of the window

    def focused_row_top_and_header_bottom():
        return browser.execute_script(
            "return [document.activeElement.closest('section.row').getBoundingClientRect()"
            ".top, document.querySelector('body > header').getBoundingClientRect().bottom]"
        )

    rows = len(browser.find_elements(By.CSS_SELECTOR, "section.row"))
    moves = ["j"] * (rows - 1) + ["k"] * (rows - 1)
    for i, key in enumerate(moves):
        _keys(browser, key)
        expected = i + 1 if i < rows - 1 else 2 * (rows - 1) - i - 1
        _wait(browser, lambda b, expected=expected: b.switch_to.active_element == _card(b, expected, "tuned"))
        time.sleep(0.1)  # the scroll is instant; let layout settle
        top, bottom = focused_row_top_and_header_bottom()
        assert top >= bottom - 1, (
            f"after {key!r} (move {i + 1}) row {expected}'s top {top} is under the header (its bottom: {bottom})"
        )

    card = _card(browser, 4, "tuned")
    text = card.find_element(By.CSS_SELECTOR, "pre.text")
    assert len(text.get_attribute("textContent")) == len(LONG)  # all of it is there, nothing cut
    assert card.rect["height"] <= 600, card.rect
    assert browser.execute_script("const p = arguments[0]; return p.scrollHeight > p.clientHeight + 100", text)
    assert "scroll inside the box" in card.find_element(By.CSS_SELECTOR, ".more").text
