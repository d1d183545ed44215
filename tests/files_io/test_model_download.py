"""The model downloader against a real HTTP server on 127.0.0.1 (no internet).

The server sends a checkpoint built from the official June 2024 key listing with synthetic
weights (63 MB), Drive-like pages, a 404 and transfers cut off half-way.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time

import pytest
import torch

from local_http import (
    LocalServer,
    Route,
    checkpoint_bytes,
    drive_interstitial,
    quota_page,
    save_bytes,
)
from napari_swinlitemedsam.io.model_download import (
    ModelDownloadError,
    drive_confirmation_url,
    fetch_model,
)
from napari_swinlitemedsam.model.checkpoint import load_model, sha256_of
from napari_swinlitemedsam.model.registry import get_weights

NAME = "swin-litemedsam"
FILENAME = get_weights(NAME).filename


@pytest.fixture(scope="module")
def module_server():
    with LocalServer() as server:
        yield server


@pytest.fixture
def server(module_server):
    module_server.reset()
    yield module_server
    module_server.reset()


@pytest.fixture(scope="module")
def checkpoint():
    return checkpoint_bytes()


def run(steps):
    """Drive a ``fetch_model`` generator; returns (progress list, result)."""
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as finished:
            return seen, finished.value


def folder_names(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_plain_download_installs_validated_file_with_a_card(tmp_path, server, checkpoint):
    server.routes["/ckpt"] = Route(checkpoint)
    progress, installed = run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    target = tmp_path / FILENAME
    assert installed.path == target and not installed.already_present
    assert target.read_bytes() == checkpoint
    assert [step.done for step in progress] == sorted(step.done for step in progress)
    assert progress[-1].done == progress[-1].total == len(checkpoint)
    card = json.loads((tmp_path / "Swin_LiteMedSAM.json").read_text())
    assert card["sha256"] == sha256_of(target) == installed.sha256
    assert card["sha256_origin"] == "recorded at download"
    assert card["file"] == FILENAME and card["source_url"] == server.url("/ckpt")
    assert folder_names(tmp_path) == ["Swin_LiteMedSAM.json", FILENAME]  # no partial file left
    assert installed.warnings == ()
    assert load_model(NAME, device="cpu", model_dir=tmp_path).spec.name == NAME


def test_drive_confirmation_page_is_followed_once(tmp_path, server, checkpoint):
    server.routes["/uc"] = Route(drive_interstitial("/download"), "text/html; charset=utf-8")
    server.routes["/download"] = Route(checkpoint, needs_query="confirm=t")
    _, installed = run(fetch_model(NAME, tmp_path, urls=[server.url("/uc?id=abc")]))
    assert installed.path.read_bytes() == checkpoint
    assert [path.split("?")[0] for path in server.requests] == ["/uc", "/download"]
    assert "uuid=0f1e2d3c" in server.requests[1]


def test_transfer_cut_off_half_way_installs_nothing_and_a_retry_completes(
    tmp_path, server, checkpoint
):
    server.routes["/ckpt"] = Route(checkpoint, cut_after=len(checkpoint) // 2)
    with pytest.raises(ModelDownloadError, match="nothing was installed") as caught:
        run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    assert str(tmp_path / FILENAME) in str(caught.value)  # where to put a file by hand
    assert folder_names(tmp_path) == []
    server.routes["/ckpt"] = Route(checkpoint)
    _, installed = run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    assert installed.path.read_bytes() == checkpoint


def test_404_names_the_url_and_the_manual_route(tmp_path, server):
    url = server.url("/gone")
    with pytest.raises(ModelDownloadError) as caught:
        run(fetch_model(NAME, tmp_path, urls=[url]))
    message = str(caught.value)
    assert "HTTP 404" in message and url in message
    assert f"put it at {tmp_path / FILENAME}" in message
    assert "\n" not in message
    assert folder_names(tmp_path) == []


@pytest.mark.parametrize(
    "page,expected",
    [
        (b"<html><head><title>Sign in</title></head><body>hello</body></html>", "'Sign in'"),
        (quota_page(), "quota is exceeded"),
    ],
)
def test_a_web_page_instead_of_the_checkpoint_is_refused(tmp_path, server, page, expected):
    server.routes["/uc"] = Route(page, "text/html")
    with pytest.raises(ModelDownloadError, match=expected):
        run(fetch_model(NAME, tmp_path, urls=[server.url("/uc")]))
    assert len(server.requests) == 1  # no retry loop
    assert folder_names(tmp_path) == []


def test_html_sent_as_a_binary_file_fails_validation(tmp_path, server):
    server.routes["/ckpt"] = Route(b"<html>not a checkpoint</html>")
    with pytest.raises(ModelDownloadError, match="not a valid Swin-LiteMedSAM checkpoint"):
        run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    assert folder_names(tmp_path) == []


def test_checkpoint_with_nan_is_never_installed(tmp_path, server, checkpoint):
    state_dict = torch.load(io.BytesIO(checkpoint), weights_only=True)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    state_dict[key] = state_dict[key].clone()
    state_dict[key][0, 0] = float("nan")
    server.routes["/ckpt"] = Route(save_bytes(state_dict))
    with pytest.raises(ModelDownloadError, match="NaN") as caught:
        run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    assert ".tmp" not in str(caught.value)  # the hidden partial file is not named
    assert folder_names(tmp_path) == []


def test_second_download_with_another_hash_warns(tmp_path, server, checkpoint):
    # What an earlier download left: a file and its card with the sha256 recorded then.
    earlier = "0123456789ab" + "0" * 52
    (tmp_path / FILENAME).write_bytes(b"the earlier download")
    card_file = tmp_path / "Swin_LiteMedSAM.json"
    card_file.write_text(json.dumps({"file": FILENAME, "sha256": earlier, "downloaded_at": "then"}))
    server.routes["/ckpt"] = Route(checkpoint)
    _, second = run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")], force=True))
    assert len(second.warnings) == 1 and "0123456789ab" in second.warnings[0]
    assert second.sha256 in second.warnings[0] or second.sha256[:12] in second.warnings[0]
    assert json.loads(card_file.read_text())["sha256"] == second.sha256 == sha256_of(second.path)
    # The same file again: nothing to warn about.
    _, third = run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")], force=True))
    assert third.warnings == ()


def test_present_file_makes_no_request(tmp_path, server):
    (tmp_path / FILENAME).write_bytes(b"whatever the user put there")
    server.routes["/ckpt"] = Route(b"must not be fetched")
    progress, installed = run(fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")]))
    assert installed.already_present and progress == []
    assert server.requests == []
    assert (tmp_path / FILENAME).read_bytes() == b"whatever the user put there"


def test_offline_error_is_one_line_with_the_manual_route(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelDownloadError) as caught:
        run(fetch_model(NAME, tmp_path, urls=[f"http://127.0.0.1:{port}/ckpt"]))
    message = str(caught.value)
    assert message.startswith(f"no network: could not reach 127.0.0.1:{port}")
    assert f"download {get_weights(NAME).manual_url} yourself" in message
    assert f"put it at {tmp_path / FILENAME}" in message
    assert "\n" not in message


def test_closing_the_generator_cancels_and_removes_the_partial_file(tmp_path, server, checkpoint):
    server.routes["/ckpt"] = Route(checkpoint)
    steps = fetch_model(NAME, tmp_path, urls=[server.url("/ckpt")])
    for _ in range(3):
        next(steps)
    assert any(name.endswith(".part") for name in folder_names(tmp_path))
    steps.close()
    assert folder_names(tmp_path) == []


def test_bundled_and_user_made_models_are_not_downloadable(tmp_path):
    with pytest.raises(ModelDownloadError, match="not downloadable"):
        run(fetch_model("swin-litemedsam-distilled", tmp_path))
    with pytest.raises(ModelDownloadError, match="unknown model"):
        run(fetch_model("sam-vit-h", tmp_path))


def test_drive_confirmation_url_reads_the_form_and_the_older_link():
    base = "https://drive.google.com/uc?export=download&id=XYZ"
    form = drive_interstitial("https://drive.usercontent.google.com/download", "XYZ").decode()
    assert drive_confirmation_url(form, base) == (
        "https://drive.usercontent.google.com/download?id=XYZ&export=download&confirm=t"
        "&uuid=0f1e2d3c"
    )
    link = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbCd&amp;id=XYZ">x</a>'
    assert drive_confirmation_url(link, base) == (
        "https://drive.google.com/uc?export=download&confirm=AbCd&id=XYZ"
    )
    assert drive_confirmation_url("<html><title>Sign in</title></html>", base) is None


def test_leftovers_of_killed_downloads_are_removed_but_not_a_running_one(tmp_path, server):
    stale = tmp_path / f".{FILENAME}.killed.tmp.part"
    running = tmp_path / f".{FILENAME}.running.tmp.part"
    for leftover in (stale, running):
        leftover.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    with pytest.raises(ModelDownloadError, match="HTTP 404"):
        run(fetch_model(NAME, tmp_path, urls=[server.url("/gone")]))
    assert folder_names(tmp_path) == [running.name]
