"""The GroupLens download path, with urlopen replaced (tests never touch the network)."""

import hashlib
import io
import urllib.error
import zipfile

import pytest

from fedshare.data import loading as data
from fedshare.data.loading import KnownDataset, locate_dataset
from fedshare.errors import DataError


def _archive(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tiny/u.data", payload)
    return buffer.getvalue()


@pytest.fixture
def tiny_dataset(monkeypatch, tmp_path):
    payload = b"1\t10\t5\t100\n2\t10\t3\t200\n"
    known = KnownDataset(
        "tiny/u.data",
        "\t",
        "https://example.invalid/tiny.zip",
        "tiny/u.data",
        ("sha256", hashlib.sha256(payload).hexdigest()),
    )
    monkeypatch.setitem(data.KNOWN_DATASETS, "tiny", known)
    monkeypatch.setenv("FEDSHARE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDSHARE_DATA_DIR", raising=False)
    return payload


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_the_checksum_and_caches(monkeypatch, tiny_dataset, tmp_path):
    calls = []
    monkeypatch.setattr(
        data.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or _Response(_archive(tiny_dataset))
    )
    path = locate_dataset("tiny", None)
    assert path.read_bytes() == tiny_dataset and path.is_relative_to(tmp_path / "cache")
    assert locate_dataset("tiny", None) == path and len(calls) == 1  # second call uses the cache


def test_a_tampered_download_is_refused(monkeypatch, tiny_dataset):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: _Response(_archive(b"1\t666\t5\t1\n")))
    with pytest.raises(DataError, match="sha256"):
        locate_dataset("tiny", None)


def test_offline_gives_a_clear_error(monkeypatch, tiny_dataset):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="download .* failed.*--data-dir"):
        locate_dataset("tiny", None)


def test_a_download_keeps_the_archives_titles_for_display(monkeypatch, tiny_dataset, tmp_path):
    from dataclasses import replace

    from fedshare.data.titles import item_titles

    known = replace(data.KNOWN_DATASETS["tiny"], titles="tiny/u.item", titles_sep="|")
    monkeypatch.setitem(data.KNOWN_DATASETS, "tiny", known)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("tiny/u.data", tiny_dataset)
        zf.writestr("tiny/u.item", "10|Caf\xe9 Society (1995)|01-Jan-1995\n".encode("latin-1"))  # GroupLens: Latin-1
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: _Response(buffer.getvalue()))
    assert item_titles("tiny", None) == {}  # nothing downloaded for titles alone
    locate_dataset("tiny", None)
    assert item_titles("tiny", None) == {"10": "Café Society (1995)"}
    assert item_titles("no-such-set", None) == {}
