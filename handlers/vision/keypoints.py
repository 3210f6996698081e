"""The COCO person keypoint layout: names, mirror pairs and skeleton (0-based joint indices).

Server and client both need it, and neither can import the other: archives carry handlers/ without the client, and
the client installs without handlers/. So this one file serves both: humanserve_client/coco.py is a link to it
(the archiver and pip copy what a link points at), and it imports nothing, to run on either side.
"""

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Limbs drawn between joints, as in the COCO person category (converted to 0-based).
COCO_SKELETON = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)


def mirror_index(names: tuple[str, ...]) -> list[int]:
    """For each joint, the index of its mirror image (left_x <-> right_x; others map to themselves)."""
    swapped = [n.replace("left_", "\0").replace("right_", "left_").replace("\0", "right_") for n in names]
    return [names.index(n) for n in swapped]
