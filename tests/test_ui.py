"""The Prefect UI shows a run, its task runs and its artifacts (headless Chromium).

Needs Debian's ``chromium`` (``.ci/run`` installs it), driven by playwright's Python package
(``[test]`` extra; it uses the system Chromium, no browser download). Without Chromium the
test is skipped with the reason, or fails under ``SEISMOFLOW_REQUIRE_DATA=1`` (CI).
Screenshots and rendered DOMs are kept in ``test-output/ui-*``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from seismoflow import monitoring as mon
from tests.conftest import OUTPUT, _require_data

matplotlib.use("Agg")

MARK = "seismoflow-ui-probe"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "chromium is not installed (apt-get install -y chromium; .ci/run does it)"
    if _require_data():
        pytest.fail(f"{reason}; SEISMOFLOW_REQUIRE_DATA=1 forbids skipping")
    pytest.skip(reason)


@task(name="count-things", cache_policy=NO_CACHE)
def count_things(n: int) -> dict[str, int]:
    return {"fetched": n, "converted": n - 1, "quarantined": 1}


@task(name="draw-plot", cache_policy=NO_CACHE)
def draw_plot(path: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 4])
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


@flow(name="ui-probe")
def ui_probe(out: str) -> dict[str, Any]:
    clock = mon.StageClock()
    with clock.stage("count"):
        counts = count_things(5)
    with clock.stage("plot"):
        png = draw_plot(str(Path(out) / "probe.png"))
    progress = mon.ProgressArtifact("ui-probe-progress", 2, "probe progress")
    progress.advance(2)
    mon.publish_markdown(
        "ui-probe-summary",
        mon.summary_markdown(f"{MARK} summary", counts, clock.rounded()),
        "probe summary",
    )
    mon.publish_table(
        "ui-probe-table", [{"reason": "no_metadata", "count": 3}], "probe quarantine reasons"
    )
    mon.publish_images("ui-probe-plots", "Probe plots", {"curve": Path(png)}, "probe plot")
    return counts


def _shoot(page: Any, name: str) -> str:
    """Keep a screenshot and the rendered DOM of ``page`` in test-output/; return the DOM."""
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"ui-{name}.png"), full_page=True)
    dom = str(page.content())
    (OUTPUT / f"ui-{name}.html").write_text(dom)
    return dom


@pytest.mark.slow  # a Prefect server and a browser
def test_run_page_shows_run_tasks_and_artifacts(prefect_server: str, tmp_path: Path) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    state = ui_probe(str(tmp_path), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    url = f"{prefect_server.removesuffix('/api')}/runs/flow-run/{run_id}"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="networkidle")
            page.get_by_text("Completed").first.wait_for()
            page.get_by_text(run.name).first.wait_for()
            assert run.name in _shoot(page, "run")

            page.get_by_text("Task Runs", exact=True).first.click()
            for name in ("count-things", "draw-plot"):
                page.get_by_text(name).first.wait_for()
            dom = _shoot(page, "task-runs")
            assert "count-things" in dom and "draw-plot" in dom

            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("ui-probe-summary").first.wait_for()
            dom = _shoot(page, "artifacts")
            keys = ("ui-probe-summary", "ui-probe-table", "ui-probe-plots", "ui-probe-progress")
            for key in keys:
                assert key in dom, f"artifact {key} not shown on the run page"

            # The plot artifact renders its embedded PNG.
            page.get_by_text("ui-probe-plots").first.click()
            page.locator("img[src^='data:image/png;base64']").first.wait_for()
            _shoot(page, "plot-artifact")
        finally:
            browser.close()
