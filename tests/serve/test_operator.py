"""The operator's endpoints on a real run (in-process): corrections kept under names the service chooses, a
threshold applied and served at once, good corrections learned (the false alarm then passes, the defects stay
flagged), the threshold view, the line's window, the key (Bearer or a browser's Basic), writes refused beyond
loopback without a key, and a version that fails to load leaving the running one in place."""

import base64

import pytest
from fastapi.testclient import TestClient

from metricad.cli import main
from metricad.deploy.bundle import Bundle
from metricad.deploy.versions import corrections_dir, history
from metricad.layout import Layout
from metricad.run import open_run
from metricad.serve import create_app
from tests.conftest import write_new_look
from tests.serve.helpers import ready

PNG = {"Content-Type": "image/png"}


def _label(client, path, **headers):
    response = client.post("/score", content=path.read_bytes(), headers=PNG | headers)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["label"], response.json()


@pytest.fixture
def served(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    looks = write_new_look(tmp_path / "looks")
    with TestClient(create_app(run, device="cpu")) as client:
        yield ready(client), run, looks, sorted((data / "test" / "spot").glob("*.png"))


def test_marked_images_are_named_by_the_service_and_kept_once(served):
    client, run, looks, spots = served
    data = looks[0].read_bytes()
    files = [("files", ("../../../etc/evil.png", data, "image/png")), ("files", ("again.png", data, "image/png"))]
    answer = client.post("/admin/corrections?label=good", files=files).json()
    assert answer["pending"] == {"good": 1, "defect": 0}
    [kept] = list((corrections_dir(run) / "good").iterdir())
    assert kept.name != "evil.png" and len(kept.stem) == 20 and answer["stored"][0]["as"] == f"good/{kept.name}"
    assert not list(run.parent.glob("**/evil.png"))
    assert client.post("/admin/corrections?label=maybe", content=data, headers=PNG).status_code == 400
    assert client.post("/admin/corrections?label=good", content=b"junk", headers=PNG).status_code == 400


def test_learning_a_marked_false_alarm_makes_it_pass_while_the_defects_stay_flagged(served):
    client, run, looks, spots = served
    assert _label(client, looks[0])[0] == "anomaly"  # the control
    assert client.post("/admin/update").status_code == 400  # nothing marked yet
    client.post("/admin/corrections?label=good", content=looks[0].read_bytes(), headers=PNG)
    client.post("/admin/corrections?label=defect", content=spots[0].read_bytes(), headers=PNG)
    summary = client.post("/admin/update").json()
    assert summary["version"] == 2 and summary["serving"]["version"] == 2 and summary["images_added"] == 1
    label, answer = _label(client, looks[0])
    assert label == "normal" and answer["version"] == 2 and answer["model_id"] == open_run(run).model_id
    assert [_label(client, spot)[0] for spot in spots] == ["anomaly"] * len(spots)
    assert len(list((corrections_dir(run) / "learned" / "v2").glob("*.png"))) == 1
    view = client.get("/threshold").json()
    assert view["pending"] == {"good": 0, "defect": 1} and view["labelled"]["is_anomaly"] == [True]
    assert view["labelled"]["scores"][0] > view["threshold"]


def test_a_threshold_applied_is_served_at_once_and_recorded(served):
    client, run, looks, spots = served
    view = client.get("/threshold").json()
    detector = open_run(run).detector
    assert view["normal"]["scores"] == pytest.approx(detector.normal_scores().tolist())
    assert view["rate"] == 0.01 and view["version"] == 1
    top = max(_label(client, spot)[1]["results"][0]["score"] for spot in spots)
    answer = client.post("/admin/threshold", json={"threshold": top + 1, "by": "inspector"}).json()
    assert answer["written"] == 2 and answer["serving"]["threshold"] == pytest.approx(top + 1)
    assert [_label(client, spot)[0] for spot in spots] == ["normal"] * len(spots)
    assert history(run)[-1]["by"] == "inspector"
    for bad in ("high", True, None):
        assert client.post("/admin/threshold", json={"threshold": bad}).status_code == 422
    assert client.get("/threshold").json()["threshold_set_on"]["mode"] == "manual"


def test_the_line_window_gives_the_recent_anomaly_rate(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    goods, spots = sorted((data / "test" / "good").glob("*.png")), sorted((data / "test" / "spot").glob("*.png"))
    for window, expected in ((3, 1.0), (6, 0.5)):
        with TestClient(create_app(run, device="cpu", window=window)) as client:
            ready(client)
            for path in goods[:3] + spots[:3]:
                _label(client, path)
            monitor = client.get("/monitor").json()
            assert monitor["anomaly_rate"] == expected and monitor["seen"] == window
            metrics = client.get("/metrics").text
            assert f"metricad_anomaly_rate {expected}" in metrics and "metricad_threshold_rate 0.01" in metrics
            assert 'metricad_score_bucket{le="2.0"}' in metrics and "metricad_model_version 1.0" in metrics


def test_the_key_guards_the_page_and_every_write(writable_patch_run):
    run, _ = writable_patch_run
    basic = "Basic " + base64.b64encode(b"inspector:s3cret").decode()
    with TestClient(create_app(run, device="cpu", api_key="s3cret")) as client:
        ready(client)
        page = client.get("/")
        assert page.status_code == 401 and page.headers["www-authenticate"].startswith("Basic")
        assert client.get("/", headers={"Authorization": basic}).status_code == 200
        wrong = "Basic " + base64.b64encode(b"inspector:guess").decode()
        assert client.post("/admin/threshold", json={"threshold": 3.0}, headers={"Authorization": wrong}
                           ).status_code == 401
        for header in (basic, "Bearer s3cret"):
            assert client.post("/admin/threshold", json={"threshold": 3.0}, headers={"Authorization": header}
                               ).status_code == 200
    assert [entry["by"] for entry in history(run)][0] == "inspector"  # the browser's user name is recorded


def test_beyond_loopback_without_a_key_the_page_and_writes_are_refused(writable_patch_run):
    run, data = writable_patch_run
    with TestClient(create_app(run, device="cpu", loopback=False)) as client:
        ready(client)
        assert client.get("/").status_code == 403
        for path in ("/admin/reload", "/admin/update", "/admin/corrections?label=good"):
            assert client.post(path).status_code == 403
        assert client.post("/admin/threshold", json={"threshold": 1.0}).status_code == 403
        assert _label(client, sorted((data / "test" / "good").glob("*.png"))[0])[0] == "normal"  # scoring is open


def test_a_version_that_fails_to_load_leaves_the_running_one(served):
    client, run, looks, spots = served
    config = Layout(run).config
    config.write_text(config.read_text().replace('"format": 3', '"format": 3, "detector_file": "gone.safetensors"'))
    answer = client.post("/admin/reload")
    assert answer.status_code == 500 and "version 1 keeps serving" in answer.json()["detail"]
    assert "gone.safetensors" in answer.json()["detail"]
    assert _label(client, spots[0])[0] == "anomaly" and client.get("/info").json()["version"] == 1


def test_a_bundle_takes_a_threshold_but_learns_nothing(writable_patch_run, tmp_path):
    run, data = writable_patch_run
    bundle = tmp_path / "part.onnx"
    assert main(["export", str(run), "--out", str(bundle)]) == 0
    with TestClient(create_app(bundle)) as client:
        ready(client)
        view = client.get("/threshold").json()
        assert view["normal"]["scores"] == pytest.approx(open_run(run).detector.normal_scores().tolist(), abs=1e-4)
        client.post("/admin/corrections?label=good", content=(data / "test" / "good" / "000.png").read_bytes(),
                    headers=PNG)
        update = client.post("/admin/update")
        assert update.status_code == 400 and "bundle holds no images" in update.json()["detail"]
        assert client.post("/admin/threshold", json={"threshold": 77.0}).json()["serving"]["version"] == 2
        assert client.get("/info").json()["threshold"] == 77.0
    assert Bundle(bundle).offset_ == 77.0
