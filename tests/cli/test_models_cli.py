"""``swinlitemedsam models list`` and ``models fetch`` against a server on 127.0.0.1."""

from __future__ import annotations

import io
import json

import pytest

from local_http import LocalServer, Route, checkpoint_bytes
from napari_swinlitemedsam.cli.main import main


@pytest.fixture(scope="module")
def server():
    with LocalServer() as running:
        running.routes["/ckpt"] = Route(checkpoint_bytes())
        yield running


def test_list_shows_bundled_missing_and_sizes(tmp_path, capsys):
    assert main(["models", "list", "--model-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "litemedsam  [bundled]  39.4 MB" in out
    assert "swin-litemedsam  [missing]  ~147 MB" in out
    assert f"path: {tmp_path / 'Swin_LiteMedSAM.pth'}" in out
    assert "drive.google.com/uc?export=download&id=1x587vVKtPZ2sGcC29gKsHO0Ha7YZTVO4" in out
    assert "swin-litemedsam-distilled  [missing]" in out


def test_fetch_installs_then_list_shows_it_and_a_second_fetch_makes_no_request(
    tmp_path, capsys, server
):
    url = server.url("/ckpt")
    before = len(server.requests)
    code = main(["models", "fetch", "swin-litemedsam", "--yes", "--url", url,
                 "--model-dir", str(tmp_path)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"installed swin-litemedsam at {tmp_path / 'Swin_LiteMedSAM.pth'}" in captured.out
    assert "Swin_LiteMedSAM.pth" in captured.err  # tqdm's bar, labelled with the file
    assert len(server.requests) == before + 1
    sha256 = json.loads((tmp_path / "Swin_LiteMedSAM.json").read_text())["sha256"]

    assert main(["models", "list", "--model-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "swin-litemedsam  [installed]  62.7 MB" in out
    assert f"sha256: {sha256} (recorded)" in out

    code = main(["models", "fetch", "swin-litemedsam", "--url", url, "--model-dir", str(tmp_path)])
    assert code == 0
    assert "already installed" in capsys.readouterr().out
    assert len(server.requests) == before + 1  # nothing asked, nothing fetched


def test_fetch_without_yes_and_without_terminal_asks_nothing_and_fails(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = main(["models", "fetch", "swin-litemedsam", "--model-dir", str(tmp_path)])
    assert code == 2
    assert "add --yes" in capsys.readouterr().err
    assert not tmp_path.joinpath("Swin_LiteMedSAM.pth").exists()


def test_fetch_failure_is_one_error_line(tmp_path, capsys, server):
    code = main(["models", "fetch", "swin-litemedsam", "--yes", "--url", server.url("/nothing"),
                 "--model-dir", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "HTTP 404" in lines[0]
    assert f"put it at {tmp_path / 'Swin_LiteMedSAM.pth'}" in lines[0]


def test_unknown_model_is_a_usage_error(tmp_path, capsys):
    assert main(["models", "fetch", "sam-vit-h", "--model-dir", str(tmp_path)]) == 2
    assert "known models" in capsys.readouterr().err
