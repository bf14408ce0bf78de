"""`fr-edge enroll`: dev mode only, quality checks, stored with the display name."""

from __future__ import annotations

import cv2
import pytest
from click.testing import CliRunner

from fr_core import DatabaseManager
from fr_core.app.cli import main


def config(tmp_path, dev_mode=True):
    path = tmp_path / "device.yaml"
    path.write_text(
        f"device_id: cam-001\nbroker_url: https://b.example\ndev_mode: {dev_mode}\n"
        f"db_path: {tmp_path}/faces.db\ndetector: yunet\nembedder: sface\n"
    )
    return str(path)


def enroll(cfg, *args):
    return CliRunner().invoke(main, ["enroll", "--config", cfg, *args])


def test_enrols_a_good_photo_in_dev_mode(fr_data, tmp_path):
    out = enroll(
        config(tmp_path),
        "EMP-OBAMA",
        str(fr_data / "faces" / "obama.jpg"),
        "--name",
        "Barack Obama",
    )
    assert out.exit_code == 0, out.output
    # (the log line before it: the new device key this first start made)
    assert out.output.splitlines()[-1].startswith("enrolled EMP-OBAMA (SFace, 128 values; face ")
    with DatabaseManager(str(tmp_path / "faces.db"), dev_mode=True) as db:
        e = db.get_enrollment("EMP-OBAMA")
    assert e.display_name == "Barack Obama" and e.model == "SFace" and e.detector == "yunet"


def test_production_refuses(fr_data, tmp_path):
    out = enroll(config(tmp_path, dev_mode=False), "EMP-1", str(fr_data / "faces" / "obama.jpg"))
    assert out.exit_code == 1 and "refused in production mode" in out.output


@pytest.mark.parametrize(
    ("photo", "fragment"),
    [
        ("two_people.jpg", "2 faces found; an enrolment photo shows exactly one"),
        ("obama-240p.jpg", "is 54 px; at least 80 px"),
    ],
)
def test_quality_checks(fr_data, tmp_path, photo, fragment):
    out = enroll(config(tmp_path), "EMP-1", str(fr_data / "faces" / photo))
    assert out.exit_code == 1 and fragment in out.output


def test_blurred_photos_are_refused(fr_data, tmp_path):
    img = cv2.imread(str(fr_data / "faces" / "obama.jpg"))
    blurred = tmp_path / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(img, (0, 0), 6))
    out = enroll(config(tmp_path), "EMP-1", str(blurred))
    assert out.exit_code == 1 and "too blurred" in out.output


def test_a_face_recognised_as_another_employee_is_refused(fr_data, tmp_path):
    """The device's own decision runs on the new face: the same person under a second id
    (obama2.jpg after obama.jpg) is refused, unless --allow-similar; re-enrolling the same
    id with another photo is not a conflict."""
    cfg = config(tmp_path)
    faces = fr_data / "faces"
    assert enroll(cfg, "EMP-1", str(faces / "obama.jpg")).exit_code == 0
    out = enroll(cfg, "EMP-2", str(faces / "obama2.jpg"))
    assert out.exit_code == 1
    assert "is recognised as EMP-1 (similarity 0.7" in out.output
    assert "--allow-similar" in out.output
    assert enroll(cfg, "EMP-1", str(faces / "obama2.jpg")).exit_code == 0  # same person, same id
    assert enroll(cfg, "EMP-BIDEN", str(faces / "biden.jpg")).exit_code == 0  # someone else
    forced = enroll(cfg, "EMP-2", str(faces / "obama.jpg"), "--allow-similar")
    assert forced.exit_code == 0, forced.output
    with DatabaseManager(str(tmp_path / "faces.db"), dev_mode=True) as db:
        assert sorted(db.get_all_enrollments()) == ["EMP-1", "EMP-2", "EMP-BIDEN"]
