"""Downloading a registry model into the user model folder, verified, atomically.

:func:`fetch_model` is a generator: it yields :class:`DownloadProgress` while bytes arrive and
returns an :class:`InstalledModel`. Closing it (a Cancel button) stops the transfer and removes
the partial file. The rules:

* a file already in place is never downloaded again (no request at all) unless ``force``;
* the bytes go to a hidden ``.<file>.<random>.tmp.part`` beside the target and are renamed to
  the target only when the transfer is complete and the file passed
  ``model.weights_check.validate_weights`` (keys, shapes, finite values, sha256 where pinned),
  so the loader never sees a partial or invalid file;
* Google Drive's large-file page ("can't scan this file for viruses") is followed once; a quota
  page, any other web page, 403/404 or a broken connection is a :class:`ModelDownloadError`
  with one line that names the URL and where to put a file downloaded by hand; no retry loop;
* the observed sha256 goes into a model card ``<stem>.json`` beside the file; a later download
  whose sha256 differs from the recorded one installs with a warning.

Why requests and not pooch or gdown: ``pooch.retrieve`` blocks until done (no progress to yield,
no cancel) and has no step between the transfer and the move for our key validation; gdown runs
its confirmation logic only for drive.google.com addresses (so it cannot be tested against a
local server), is not installed with napari, and adds beautifulsoup4 and filelock. requests is
what pooch itself downloads with (installed with napari) and brings certifi's CA bundle, which
the standard library's urllib lacks on some macOS Pythons.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

from napari_swinlitemedsam.model.checkpoint import CheckpointError, default_model_dir
from napari_swinlitemedsam.model.registry import ModelWeights, get_weights
from napari_swinlitemedsam.model.weights_check import validate_weights
from napari_swinlitemedsam.storage.atomic_files import replacing_atomically, write_atomically

PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20
# (connect, read) seconds: a server that stops sending for a minute is a failure, not a wait.
TIMEOUT_S = (15.0, 60.0)
MAX_PAGE_BYTES = 2 << 20  # a confirmation page is a few kB; never read a file as a page
STALE_PART_S = 600  # a partial file untouched this long belongs to no running download


class ModelDownloadError(OSError):
    """A download failed; the message says why and how to install the file by hand.

    Not a RuntimeError: napari's generator workers take a RuntimeError for a deleted worker
    and drop it silently (no ``errored``, no ``finished``)."""


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes received so far; ``total`` is None when the server does not say."""

    done: int
    total: int | None
    url: str


@dataclass(frozen=True)
class InstalledModel:
    """Where a model's file is, its sha256 (None if never recorded) and what was noticed."""

    name: str
    path: Path
    sha256: str | None
    size_bytes: int
    url: str | None
    already_present: bool
    warnings: tuple[str, ...] = ()


def target_path(entry: ModelWeights, model_dir: Path | None = None) -> Path:
    """Where ``entry``'s file belongs in the model folder."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    return folder / entry.filename


def card_path(weights: Path) -> Path:
    """The model card beside a weight file: ``<stem>.json``."""
    return weights.with_suffix(".json")


def read_card(weights: Path) -> dict | None:
    """The model card of ``weights`` if it describes that file, else None."""
    try:
        card = json.loads(card_path(weights).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict) or card.get("file") != weights.name:
        return None
    return card


def manual_route(entry: ModelWeights, target: Path) -> str:
    """The sentence telling a user how to install ``entry`` without this downloader."""
    return f"download {entry.manual_url} yourself and put it at {target}"


def fetch_model(
    name: str,
    model_dir: Path | None = None,
    force: bool = False,
    urls: Iterable[str] | None = None,
    timeout: tuple[float, float] = TIMEOUT_S,
) -> Generator[DownloadProgress, None, InstalledModel]:
    """Install the registry model ``name`` into the model folder; yields progress.

    ``urls`` replaces the registry's sources (a mirror; the tests' local server). Without
    ``force`` a file already in place is returned as it is, without any network access.
    Raises :class:`ModelDownloadError` (one line, with the manual route).
    """
    try:
        entry = get_weights(name)
    except KeyError as error:
        raise ModelDownloadError(str(error.args[0])) from None
    target = target_path(entry, model_dir)
    if target.is_file() and not force:
        card = read_card(target) or {}
        return InstalledModel(
            entry.name,
            target,
            card.get("sha256") or entry.sha256,
            target.stat().st_size,
            card.get("source_url"),
            already_present=True,
        )
    sources = tuple(urls) if urls else entry.urls
    if not sources:
        raise ModelDownloadError(
            f"{entry.name} is not downloadable ({entry.origin}): {entry.upstream}"
        )
    _remove_stale_parts(target)
    failures = []
    for url in sources:
        try:
            return (yield from _download_and_install(entry, url, target, timeout))
        except ModelDownloadError as error:
            failures.append(str(error))
    # Several sources: say what each did (each message already ends with the manual route).
    raise ModelDownloadError(" | ".join(failures))


def _download_and_install(
    entry: ModelWeights, url: str, target: Path, timeout: tuple[float, float]
) -> Generator[DownloadProgress, None, InstalledModel]:
    import requests

    manual = manual_route(entry, target)
    previous = read_card(target)
    with requests.Session() as session:
        response = _open_file(session, url, timeout, manual)
        total = _content_length(response)
        with replacing_atomically(target, PART_SUFFIX) as part:
            done = 0
            yield DownloadProgress(0, total, url)
            with response, open(part, "wb") as stream:
                try:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        stream.write(chunk)
                        done += len(chunk)
                        yield DownloadProgress(done, total, url)
                except requests.RequestException as error:
                    raise ModelDownloadError(
                        f"the download from {url} broke off after {done / 1e6:.1f} MB "
                        f"({_reason(error)}); nothing was installed. Try again, or {manual}"
                    ) from None
            if total is not None and done != total:
                raise ModelDownloadError(
                    f"the download from {url} ended after {done} of {total} bytes; nothing was "
                    f"installed. Try again, or {manual}"
                )
            try:
                report = validate_weights(part, entry)
            except CheckpointError as error:
                reason = str(error).replace(str(part), "the downloaded file")
                raise ModelDownloadError(
                    f"the file from {url} is not a valid {entry.label} checkpoint ({reason}); "
                    f"it was not installed. {manual[0].upper()}{manual[1:]}"
                ) from None
    warnings = _hash_warnings(entry, report.sha256, previous)
    card = {
        "file": entry.filename,
        "name": entry.name,
        "network": entry.network,
        "sha256": report.sha256,
        "sha256_origin": "published" if entry.sha256 else "recorded at download",
        "size_bytes": report.size_bytes,
        "keys": report.keys,
        "source_url": url,
        "licence": entry.licence,
        "upstream": entry.upstream,
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(card, indent=2).encode()
    write_atomically(card_path(target), lambda stream: stream.write(text))
    return InstalledModel(
        entry.name, target, report.sha256, report.size_bytes, url, False, tuple(warnings)
    )


def _open_file(session, url: str, timeout: tuple[float, float], manual: str):
    """The response that carries the file: follows one Drive confirmation page, no more."""
    response = _get(session, url, timeout, manual)
    if not _is_html(response):
        return response
    page = _read_page(response)
    confirmed = drive_confirmation_url(page, response.url or url)
    if confirmed is None:
        raise ModelDownloadError(f"{_page_refusal(page, url)}; {manual}")
    response = _get(session, confirmed, timeout, manual)
    if _is_html(response):
        raise ModelDownloadError(f"{_page_refusal(_read_page(response), url)}; {manual}")
    return response


def _get(session, url: str, timeout: tuple[float, float], manual: str):
    import requests

    host = urlsplit(url).netloc or url
    try:
        response = session.get(url, stream=True, timeout=timeout)
    except requests.Timeout:
        raise ModelDownloadError(
            f"{host} did not answer within {timeout[0]:.0f} s; {manual}"
        ) from None
    except requests.ConnectionError as error:
        raise ModelDownloadError(
            f"no network: could not reach {host} ({_reason(error)}); {manual}"
        ) from None
    except requests.RequestException as error:
        raise ModelDownloadError(f"could not download {url} ({_reason(error)}); {manual}") from None
    if response.status_code != 200:
        response.close()
        hint = {
            403: "access refused (for Google Drive also: download quota exceeded)",
            404: "the file is not there (removed, or the link changed)",
            429: "too many requests; try again later",
        }.get(response.status_code, response.reason or "")
        raise ModelDownloadError(
            f"{host} answered HTTP {response.status_code} for {url}: {hint}; {manual}"
        )
    return response


def _is_html(response) -> bool:
    return response.headers.get("Content-Type", "").lower().startswith("text/html")


def _read_page(response) -> str:
    with response:
        data = response.raw.read(MAX_PAGE_BYTES, decode_content=True)
    return data.decode(response.encoding or "utf-8", errors="replace")


def _content_length(response) -> int | None:
    # A compressed transfer's length counts compressed bytes; then the total is unknown.
    if response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
        return None
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _page_refusal(page: str, url: str) -> str:
    lowered = page.lower()
    if "quota" in lowered or "too many users" in lowered:
        return (
            f"Google Drive refuses the download of {url}: the file's download quota is "
            "exceeded (too many downloads in 24 hours)"
        )
    title = _PageReader.read(page).title.strip()
    shown = f" ({title!r})" if title else ""
    return f"{url} sent a web page{shown} instead of the checkpoint"


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


def _hash_warnings(entry: ModelWeights, sha256: str, previous: dict | None) -> list[str]:
    if previous is None or not previous.get("sha256") or previous["sha256"] == sha256:
        return []
    return [
        f"this {entry.label} file differs from the one downloaded on "
        f"{previous.get('downloaded_at', 'an earlier day')} (sha256 {sha256[:12]}... instead of "
        f"{str(previous['sha256'])[:12]}...): the publisher may have replaced it. It passed "
        "validation and is installed; compare results if you depend on the old one."
    ]


def _remove_stale_parts(target: Path) -> None:
    """Delete partial files of ``target`` left by killed downloads (not by running ones)."""
    if not target.parent.is_dir():
        return
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*{PART_SUFFIX}"):
        try:
            if now - leftover.stat().st_mtime > STALE_PART_S:
                leftover.unlink()
        except OSError:
            pass  # removed meanwhile, or not ours to remove: leave it


def drive_confirmation_url(page: str, base_url: str) -> str | None:
    """The download address on a Google Drive "can't scan this file for viruses" page.

    Current Drive pages hold a form ``id="download-form"`` (action and hidden inputs); older
    ones a link whose address has ``confirm=``. None when the page has neither.
    """
    reader = _PageReader.read(page)
    if reader.form_action is not None:
        query = urlencode(reader.form_inputs)
        action = urljoin(base_url, reader.form_action)
        return f"{action}{'&' if '?' in action else '?'}{query}" if query else action
    for href in reader.links:
        if "confirm=" in href:
            return urljoin(base_url, href)
    return None


class _PageReader(HTMLParser):
    """The title, the download form and the links of an HTML page (standard library parser)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.form_action: str | None = None
        self.form_inputs: dict[str, str] = {}
        self.links: list[str] = []
        self._in_title = False
        self._in_form = False

    @classmethod
    def read(cls, page: str) -> _PageReader:
        reader = cls()
        reader.feed(page)
        reader.close()
        return reader

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "form" and values.get("id") == "download-form":
            self._in_form = True
            self.form_action = values.get("action", "")
        elif tag == "input" and self._in_form and values.get("name"):
            self.form_inputs[values["name"]] = values.get("value", "")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
