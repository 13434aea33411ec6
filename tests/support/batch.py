"""What the batch job tests share (tests/batch/conftest.py's fixtures and the tests)."""

from __future__ import annotations

#: small real photos (400x267 .. 770x595): real work, a few seconds in all
PHOTOS = ("hockey.png", "whisk.png", "horse.jpg")
#: not an image: a text file under an image name, as a broken upload looks
CORRUPT_NAME = "broken.jpg"
CORRUPT_BYTES = b"this is not a JPEG, only its name says so\n" * 8


def photo_names() -> list[str]:
    """The inputs as the job names them: the photos, one in a sub-folder, and the corrupt one."""
    return [PHOTOS[0], PHOTOS[1], f"sub/{PHOTOS[2]}", CORRUPT_NAME]
