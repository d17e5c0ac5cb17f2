"""The operator's page in a real browser (Debian's headless chromium, driven by playwright) against a real
``metricad serve`` with an API key: the page asks for the key (a page without it is refused), an upload shows each
image's map at the upload's resolution, worst first; a false alarm marked good and learned passes while a defect
stays flagged; a threshold moved and applied on the page changes the service's own labels; every change is
recorded under the browser's user name."""

import json
import os
import shutil
import sys
import urllib.request

import pytest

from metricad.deploy.versions import history
from tests.conftest import write_new_look
from tests.serve.helpers import free_port, start_service

KEY = "page-test-key"


def browser_path() -> str:
    path = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no headless browser: scripts/setup.sh installs chromium-headless-shell")
        pytest.skip("no headless browser installed (scripts/setup.sh installs chromium-headless-shell)")
    return path


def score_by_api(port: int, path) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=path.read_bytes(), method="POST",
                                     headers={"Content-Type": "image/png", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_page_inspects_learns_a_false_alarm_and_applies_a_threshold(writable_patch_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    run, data = writable_patch_run
    look = write_new_look(tmp_path / "looks", n=1)[0]
    spot, good = sorted((data / "test" / "spot").glob("*.png"))[2], data / "test" / "good" / "000.png"
    port = free_port()
    process = start_service([sys.executable, "-m", "metricad", "serve", str(run), "--port", str(port), "--device",
                             "cpu"], port, env=os.environ | {"METRICAD_API_KEY": KEY})
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path())
            assert browser.new_page().goto(url).status == 401  # the control: no key, no page
            context = browser.new_context(http_credentials={"username": "inspector", "password": KEY})
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector('#model[data-version="1"]')
            page.set_input_files("#files", [str(look), str(spot), str(good)])
            page.wait_for_function("document.querySelectorAll('.card').length === 3")
            card = lambda path: page.locator(f'.card[data-name="{path.name}"]')  # noqa: E731
            names = [c.get_attribute("data-name") for c in page.query_selector_all(".card")]
            assert names[-1] == good.name  # worst first: the good part last
            assert card(look).get_attribute("data-label") == "anomaly"  # the false alarm, before
            assert card(spot).get_attribute("data-label") == "anomaly"
            width = card(spot).locator("img").evaluate("img => img.complete && img.naturalWidth")
            assert width == 80  # the map over the image, at the upload's own resolution (the model's is 64)

            card(look).locator(".mark-good").click()
            page.wait_for_selector('#pending[data-good="1"]')
            card(spot).locator(".mark-defect").click()
            page.wait_for_selector('#pending[data-defect="1"]')
            page.click("#learn")
            page.wait_for_selector('#model[data-version="2"]', timeout=120_000)
            page.wait_for_selector(f'.card[data-name="{look.name}"][data-version="2"]')
            assert card(look).get_attribute("data-label") == "normal"  # learned: it passes now
            assert card(spot).get_attribute("data-label") == "anomaly"  # the defect stays flagged

            assert page.text_content("#recall").startswith("100.0 % of 1")
            above = float(card(spot).get_attribute("data-score")) + 1
            page.evaluate("t => { const s = document.getElementById('slider'); s.value = t; "
                          "s.dispatchEvent(new Event('input')); }", above)
            assert page.text_content("#recall").startswith("0.0 % of 1")  # what the move would do, shown
            page.click("#apply")
            page.wait_for_selector('#model[data-version="3"]')
            page.wait_for_selector(f'.card[data-name="{spot.name}"][data-version="3"]')
            assert card(spot).get_attribute("data-label") == "normal"
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
        answer = score_by_api(port, spot)  # the service's own labels changed, not only the page's
        assert answer["version"] == 3 and answer["results"][0]["label"] == "normal"
        assert answer["threshold"] == pytest.approx(above, rel=1e-6)
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert [(entry["version"], entry["by"]) for entry in history(run)] == [(2, "inspector"), (3, "inspector")]
