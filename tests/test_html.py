"""The HTML report (`refhunt run --html`, `refhunt report --format html`) in a real headless
browser: Chromium from Debian's packages opens the page, and its DOM holds every leak with
its site and the source line it points at, and the memory curve; a screenshot is kept in
.venv/html-report.png."""
import html as html_text
import re
import shutil
import subprocess

import pytest
from conftest import ROOT, marker_line, native_line, one_line_error, zoo_build

NATIVE = ROOT / "zoo" / "native.c"
PROGRAM = """
import zoo, zoo_native
zoo.leakNewRefs(5000, 1000)
zoo.leak_float(1.5, 30)
zoo_native.leak_malloc(1000, 100)
"""


def chromium():
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium (scripts/test.sh installs Debian's)")
    return found


def browse(page, *args):
    """What headless Chromium makes of `page`: its DOM, or with --screenshot its image."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--window-size=1200,1800", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def test_the_page_shows_every_leak_with_its_site_and_source(env):
    zoo_build.build(env.python, env.zoo, source=str(NATIVE), name="zoo_native")
    page = env.tmp / "report.html"
    capture = env.tmp / "report.capture"
    r = env.run("python", env.script("html_leaks.py", PROGRAM),
                refhunt_args=("--html", str(page), "-o", str(capture)))
    assert r.rc == 0 and len(r.leaks) == 2 and len(r.report["native_leaks"]) == 1, r.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    assert not re.search(r"<script|<link|<img|\bsrc=|href=\"?https?:|url\(", html), html[:2000]
    # The memory curve of the run, drawn inline.
    assert '<h2 id="memory">' in html and "<svg" in html
    again = subprocess.run([env.refhunt, "report", str(capture), "--format", "html"],
                           capture_output=True, text=True, cwd=str(env.tmp))
    assert again.returncode == 0 and again.stdout.count("<section") == html.count("<section")

    dom = browse(page, "--dump-dom").stdout
    sections = re.findall(r'<section class="([^"]*)" id="[^"]*" data-kind="([^"]*)" '
                          r'data-type="([^"]*)">(.*?)</section>', dom, re.S)
    found = {(kind, type_name) for _, kind, type_name, _ in sections}
    assert found == {("objects", "int"), ("objects", "float"), ("native", "malloc")}, dom[:3000]
    for leak in r.leaks + r.report["native_leaks"]:
        assert leak["site"] in dom, leak["site"]
    by_type = {type_name: body for _, _, type_name, body in sections}
    # The line each leak points at, read from the source, marked.
    hit = re.compile(r'<span class="hit">\s*(\d+)  ([^<]*)</span>')
    number, text = hit.search(by_type["int"]).groups()
    source = (ROOT / "zoo" / "zoo.c").read_text().splitlines()
    assert (int(number), html_text.unescape(text)) == (
        marker_line("new_ref"), source[marker_line("new_ref") - 1]), by_type["int"]
    assert hit.search(by_type["malloc"]).group(1) == str(native_line("malloc", NATIVE))
    assert "native stack (" in by_type["int"] and "Python stack (" in by_type["int"]

    # A curve that `refhunt watch --json` kept, drawn into the page of a capture.
    watched = env.tmp / "watch.json"
    subprocess.run([env.refhunt, "watch", "--json", str(watched), "--interval", "0.1", "--",
                    env.python, "-c", "import time; x = [0] * 3000000; time.sleep(0.5)"],
                   check=True, capture_output=True, cwd=str(env.tmp))
    drawn = subprocess.run([env.refhunt, "report", str(capture), "--format", "html", "--curve",
                            str(watched)], capture_output=True, text=True, cwd=str(env.tmp))
    assert drawn.returncode == 0 and "<svg" in drawn.stdout, drawn.stderr
    misplaced = subprocess.run([env.refhunt, "report", str(capture), "--curve", str(watched)],
                               capture_output=True, text=True, cwd=str(env.tmp))
    assert "--curve draws into the HTML page" in one_line_error(misplaced)

    shot = ROOT / ".venv" / "html-report.png"
    shot.parent.mkdir(exist_ok=True)
    taken = browse(page, "--screenshot=%s" % shot)
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
