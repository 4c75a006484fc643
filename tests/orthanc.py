"""A real Orthanc PACS on loopback for tests (Debian's `orthanc` and `orthanc-dicomweb`): its
REST API, DICOM port and DICOMweb, with a modality entry for brainscan's listener so it can send
studies there as a PACS does. Missing in CI is an error; elsewhere the tests that need it skip."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest

from brainscan.testing import free_port, wait_for

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def need_orthanc() -> None:
    """Skip (fail in CI) where Orthanc and its DICOMweb plugin are not installed."""
    if Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists():
        return
    message = "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Orthanc:
    """A running Orthanc: `url` (REST), `dicomweb` (its DICOMweb root), `dicom_port`, AE ORTHANC."""

    def __init__(self, http_port: int, dicom_port: int) -> None:
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.dicom_port = dicom_port

    def request(self, method: str, path: str, body: bytes | None = None, accept: str = "") -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        return json.loads(self.request(method, path, data) or b"null")

    def upload(self, files: list[Path]) -> str:
        """Store files in Orthanc (REST); the Orthanc id of their study."""
        study = ""
        for path in files:
            study = self.json("POST", "/instances", path.read_bytes())["ParentStudy"]
        return study

    def send_study(self, modality: str, study_id: str) -> None:
        """Orthanc C-STOREs the study to `modality` (as a PACS routes a study)."""
        self.json("POST", f"/modalities/{modality}/store", {"Resources": [study_id], "Synchronous": True})

    def qido(self, path: str) -> list[dict[str, Any]]:
        """QIDO-RS: what the query under the DICOMweb root finds, as DICOM JSON."""
        answer = self.request("GET", f"/dicom-web/{path}", accept="application/dicom+json")
        return list(json.loads(answer or b"[]"))

    def find_instances(self, study_uid: str, modality: str, series_number: int) -> list[tuple[str, str]]:
        """(series UID, SOP Instance UID) of the study's instances in its series of `modality`
        numbered `series_number`, found by QIDO-RS (series, then their instances)."""
        found = []
        for series in self.qido(f"studies/{study_uid}/series?Modality={modality}"):
            if series.get("00200011", {}).get("Value") != [series_number]:
                continue
            series_uid = series["0020000E"]["Value"][0]
            for instance in self.qido(f"studies/{study_uid}/series/{series_uid}/instances"):
                found.append((series_uid, instance["00080018"]["Value"][0]))
        return found

    def retrieve(self, sop_uid: str) -> pydicom.Dataset:
        """The instance as stored (Orthanc's REST API, found by its SOP Instance UID)."""
        found = self.json("POST", "/tools/lookup", sop_uid.encode())
        (instance,) = [f for f in found if f["Type"] == "Instance"]
        return pydicom.dcmread(io.BytesIO(self.request("GET", f"/instances/{instance['ID']}/file")))


@contextmanager
def running_orthanc(folder: Path, *, modalities: dict[str, tuple[str, int]]) -> Iterator[Orthanc]:
    """Orthanc on 127.0.0.1 with its storage in `folder`; `modalities`: name -> (AE title, port)
    of the DICOM nodes it may send to (all on 127.0.0.1)."""
    need_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "brainscan-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()},
        "DicomAlwaysAllowStore": True,
        "StableAge": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    orthanc = Orthanc(http_port, dicom_port)

    def up() -> bool:
        try:
            orthanc.json("GET", "/system")
            return True
        except OSError:
            return False

    try:
        assert wait_for(up, 30), f"Orthanc did not start:\n{log.read_text(errors='replace')[-3000:]}"
        yield orthanc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
