"""The six object templates, drawn in template space u ∈ [-1, 1]² (u_y down).

Designs are deliberately a little asymmetric (spots, tilts, offsets) so every keypoint has a unique
appearance even though objects are never mirrored. Keypoints sit well inside their part (tests check
a margin) so they stay visible after warping to small sizes. Drawing order matters: later calls
paint over earlier ones. Accent/dark colours are fixed per part (RGB); primary/secondary colours are
drawn per instance around `primary_hsv`/`secondary_hsv`.
"""

from __future__ import annotations

from sc_imagenet.synth.canvas import Canvas, PartSpec, TemplateSpec

BLACK = (28, 24, 24)


def _beetle(c: Canvas) -> None:
    for side in (-1, 1):
        c.line("legs", [(0.3 * side, -0.2), (0.55 * side, -0.35), (0.7 * side, -0.62)], 0.06)
        c.line("legs", [(0.38 * side, 0.1), (0.7 * side, 0.07), (0.86 * side, 0.3)], 0.06)
        c.line("legs", [(0.32 * side, 0.45), (0.59 * side, 0.61), (0.68 * side, 0.9)], 0.06)
        c.line("antennae", [(0.08 * side, -0.6), (0.2 * side, -0.8), (0.4 * side, -0.9)], 0.04)
        c.circle("antennae", (0.41 * side, -0.9), 0.055)
    c.ellipse("body", (0.0, 0.2), (0.42, 0.58))
    c.line("seam", [(0.0, -0.14), (0.0, 0.76)], 0.025)
    spots = (
        (-0.2, 0.0, 0.09),
        (-0.22, 0.42, 0.08),
        (-0.1, 0.62, 0.06),
        (0.2, 0.18, 0.11),
        (0.18, 0.55, 0.07),
    )
    for x, y, r in spots:
        c.circle("spots", (x, y), r, within="body")
    c.ellipse("pronotum", (0.0, -0.3), (0.33, 0.16))
    c.ellipse("head", (0.0, -0.5), (0.2, 0.14))
    c.circle("eyes", (-0.11, -0.55), 0.05)
    c.circle("eyes", (0.11, -0.55), 0.05)


BEETLE = TemplateSpec(
    wnid="n90000001",
    name="beetle",
    parts=(
        PartSpec("body", "primary"),
        PartSpec("pronotum", "secondary"),
        PartSpec("head", "dark", BLACK),
        PartSpec("legs", "dark", BLACK),
        PartSpec("antennae", "dark", (45, 30, 25)),
        PartSpec("seam", "dark", BLACK),
        PartSpec("spots", "dark", (15, 15, 15)),
        PartSpec("eyes", "accent", (250, 235, 110)),
    ),
    keypoints=(
        ("head", 0.0, -0.46),
        ("left_eye", -0.11, -0.55),
        ("right_eye", 0.11, -0.55),
        ("left_antenna_tip", -0.41, -0.9),
        ("right_antenna_tip", 0.41, -0.9),
        ("pronotum", 0.12, -0.3),
        ("body_rear", 0.08, 0.7),
        ("left_front_knee", -0.55, -0.35),
        ("right_front_knee", 0.55, -0.35),
        ("left_hind_knee", -0.59, 0.61),
        ("right_hind_knee", 0.59, 0.61),
        ("big_spot", 0.2, 0.18),
        ("left_shoulder", -0.25, -0.1),
    ),
    primary_hsv=(0.0, 0.8, 0.8),
    secondary_hsv=(0.6, 0.55, 0.4),
    draw=_beetle,
)


def _fish(c: Canvas) -> None:
    c.poly("tail", [(0.45, -0.12), (0.95, -0.5), (0.78, 0.0), (0.93, 0.45), (0.45, 0.12)])
    c.poly("fins", [(-0.3, -0.28), (-0.05, -0.66), (0.08, -0.62), (0.28, -0.26)])
    c.poly("fins", [(0.05, 0.26), (0.22, 0.52), (0.32, 0.48), (0.35, 0.22)])
    c.ellipse("body", (-0.05, 0.0), (0.62, 0.36))
    c.ellipse("belly", (-0.05, 0.16), (0.5, 0.16), within="body")
    c.ellipse("gill", (-0.25, 0.0), (0.12, 0.28), start=-70, end=70, width=0.03, within="body")
    c.ellipse("gill", (-0.25, 0.0), (0.12, 0.28), start=-70, end=70, width=0.03, within="belly")
    c.ellipse("pectoral_fin", (-0.1, 0.1), (0.15, 0.065), angle=25)
    c.circle("eye", (-0.45, -0.08), 0.085)
    c.circle("pupil", (-0.46, -0.08), 0.04)
    c.line("mouth", [(-0.67, 0.06), (-0.55, 0.08)], 0.025)


FISH = TemplateSpec(
    wnid="n90000002",
    name="fish",
    parts=(
        PartSpec("body", "primary"),
        PartSpec("belly", "accent", (236, 226, 192)),
        PartSpec("tail", "secondary"),
        PartSpec("fins", "secondary"),
        PartSpec("pectoral_fin", "accent", (240, 140, 40)),
        PartSpec("gill", "dark", (60, 40, 40)),
        PartSpec("eye", "accent", (245, 245, 235)),
        PartSpec("pupil", "dark", BLACK),
        PartSpec("mouth", "dark", BLACK),
    ),
    keypoints=(
        ("eye", -0.46, -0.08),
        ("mouth", -0.6, 0.07),
        ("gill_top", -0.2, -0.24),
        ("gill_bottom", -0.2, 0.24),
        ("dorsal_fin_tip", 0.0, -0.6),
        ("dorsal_fin_base", -0.02, -0.38),
        ("tail_upper_tip", 0.84, -0.38),
        ("tail_lower_tip", 0.86, 0.37),
        ("tail_fork", 0.68, 0.0),
        ("pectoral_fin", -0.1, 0.1),
        ("anal_fin", 0.25, 0.4),
        ("back", 0.25, -0.15),
    ),
    primary_hsv=(0.55, 0.6, 0.75),
    secondary_hsv=(0.13, 0.75, 0.85),
    draw=_fish,
)


def _bird(c: Canvas) -> None:
    c.line("legs", [(-0.05, 0.3), (-0.08, 0.62), (-0.2, 0.78)], 0.045)
    c.line("legs", [(0.12, 0.3), (0.14, 0.64), (0.02, 0.8)], 0.045)
    c.poly("tail", [(0.38, -0.02), (0.95, -0.28), (0.98, -0.1), (0.42, 0.2)])
    c.ellipse("body", (0.05, 0.05), (0.48, 0.3), angle=-12)
    c.ellipse("breast", (-0.22, 0.12), (0.2, 0.17), within="body")
    c.ellipse("wing", (0.14, -0.02), (0.34, 0.15), angle=-18)
    c.circle("head", (-0.38, -0.26), 0.22)
    c.ellipse("cap", (-0.38, -0.26), (0.22, 0.22), start=190, end=330, within="head")
    c.poly("beak", [(-0.53, -0.33), (-0.85, -0.21), (-0.53, -0.17)])
    c.circle("eye", (-0.43, -0.28), 0.045)


BIRD = TemplateSpec(
    wnid="n90000003",
    name="bird",
    parts=(
        PartSpec("body", "primary"),
        PartSpec("head", "primary"),
        PartSpec("wing", "secondary"),
        PartSpec("tail", "secondary"),
        PartSpec("breast", "accent", (226, 92, 52)),
        PartSpec("cap", "dark", (35, 35, 45)),
        PartSpec("beak", "accent", (246, 178, 30)),
        PartSpec("eye", "dark", BLACK),
        PartSpec("legs", "dark", (70, 55, 45)),
    ),
    keypoints=(
        ("beak_tip", -0.74, -0.223),
        ("beak_base", -0.57, -0.25),
        ("eye", -0.43, -0.28),
        ("crown", -0.31, -0.41),
        ("throat", -0.44, -0.1),
        ("breast", -0.22, 0.12),
        ("wing_tip", 0.41, -0.11),
        ("wing_center", 0.14, -0.02),
        ("tail_tip", 0.9, -0.18),
        ("left_foot", -0.14, 0.7),
        ("right_foot", 0.08, 0.72),
        ("belly", 0.1, 0.24),
    ),
    primary_hsv=(0.6, 0.45, 0.7),
    secondary_hsv=(0.58, 0.6, 0.45),
    draw=_bird,
)


def _mushroom(c: Canvas) -> None:
    c.poly("stem", [(-0.14, -0.05), (0.14, -0.05), (0.18, 0.7), (-0.2, 0.7)])
    c.ellipse("base", (0.0, 0.72), (0.3, 0.16))
    c.ellipse("ring", (0.0, 0.12), (0.21, 0.065))
    c.ellipse("gills", (0.0, -0.12), (0.8, 0.14), angle=6, start=0, end=180)
    c.ellipse("cap", (0.0, -0.12), (0.85, 0.62), angle=6, start=180, end=360)
    spots = (
        (-0.45, -0.35, 0.1),
        (-0.1, -0.55, 0.08),
        (0.3, -0.4, 0.11),
        (0.6, -0.2, 0.06),
        (0.05, -0.28, 0.05),
    )
    for x, y, r in spots:
        c.circle("spots", (x, y), r, within="cap")


MUSHROOM = TemplateSpec(
    wnid="n90000004",
    name="mushroom",
    parts=(
        PartSpec("cap", "primary"),
        PartSpec("stem", "secondary"),
        PartSpec("gills", "dark", (112, 80, 60)),
        PartSpec("ring", "accent", (236, 230, 210)),
        PartSpec("base", "accent", (130, 95, 60)),
        PartSpec("spots", "accent", (248, 244, 228)),
    ),
    keypoints=(
        ("cap_top", 0.06, -0.66),
        ("cap_left_edge", -0.72, -0.26),
        ("cap_right_edge", 0.72, -0.1),
        ("gills_center", 0.0, -0.06),
        ("stem_top", 0.0, 0.02),
        ("ring", 0.0, 0.12),
        ("stem_middle", 0.0, 0.4),
        ("base_left", -0.2, 0.76),
        ("base_right", 0.2, 0.76),
        ("big_spot", 0.3, -0.4),
        ("left_spot", -0.45, -0.35),
    ),
    primary_hsv=(0.02, 0.75, 0.75),
    secondary_hsv=(0.11, 0.18, 0.88),
    draw=_mushroom,
)


def _teapot(c: Canvas) -> None:
    c.ellipse("handle", (0.55, 0.08), (0.3, 0.3), start=-85, end=85, width=0.09)
    c.poly(
        "spout", [(-0.42, 0.0), (-0.7, -0.15), (-0.86, -0.42), (-0.95, -0.36), (-0.8, -0.05), (-0.42, 0.35)]
    )
    c.poly("base", [(-0.35, 0.45), (0.35, 0.45), (0.32, 0.72), (-0.32, 0.72)])
    c.ellipse("body", (0.0, 0.15), (0.58, 0.45))
    c.poly("band", [(-0.7, 0.1), (0.7, 0.1), (0.7, 0.22), (-0.7, 0.22)], within="body")
    c.ellipse("lid", (0.0, -0.27), (0.34, 0.15), start=180, end=360)
    c.ellipse("lid", (0.0, -0.27), (0.36, 0.045))
    c.circle("knob", (0.0, -0.47), 0.08)


TEAPOT = TemplateSpec(
    wnid="n90000005",
    name="teapot",
    parts=(
        PartSpec("body", "primary"),
        PartSpec("spout", "primary"),
        PartSpec("handle", "secondary"),
        PartSpec("lid", "secondary"),
        PartSpec("knob", "accent", (200, 48, 40)),
        PartSpec("band", "accent", (232, 192, 60)),
        PartSpec("base", "dark", (50, 45, 55)),
    ),
    keypoints=(
        ("knob", 0.0, -0.48),
        ("lid_left", -0.25, -0.3),
        ("lid_right", 0.25, -0.3),
        ("spout_tip", -0.87, -0.36),
        ("spout_base", -0.48, 0.12),
        ("handle_top", 0.7, -0.18),
        ("handle_outer", 0.85, 0.08),
        ("handle_bottom", 0.7, 0.34),
        ("base_left", -0.26, 0.66),
        ("base_right", 0.26, 0.66),
        ("band_front", -0.15, 0.16),
        ("belly", 0.2, 0.4),
    ),
    primary_hsv=(0.45, 0.45, 0.65),
    secondary_hsv=(0.75, 0.35, 0.5),
    draw=_teapot,
)


def _guitar(c: Canvas) -> None:
    c.circle("body", (0.0, 0.5), 0.42)
    c.circle("body", (0.0, 0.0), 0.31)
    c.poly("body", [(-0.3, 0.05), (0.3, 0.05), (0.38, 0.3), (-0.38, 0.3)])
    c.circle("rosette", (0.0, 0.12), 0.155)
    c.circle("sound_hole", (0.0, 0.12), 0.115)
    c.ellipse("pickguard", (0.18, 0.32), (0.1, 0.15), angle=20)
    c.poly("bridge", [(-0.19, 0.6), (0.19, 0.6), (0.19, 0.68), (-0.19, 0.68)])
    c.poly("neck", [(-0.06, -0.2), (0.06, -0.2), (0.055, -0.73), (-0.055, -0.73)])
    for x, y in ((-0.14, -0.8), (-0.15, -0.9), (0.16, -0.82), (0.17, -0.92)):
        c.circle("pegs", (x, y), 0.04)
    c.poly("headstock", [(-0.1, -0.72), (0.1, -0.72), (0.13, -0.97), (-0.08, -0.99)])


GUITAR = TemplateSpec(
    wnid="n90000006",
    name="guitar",
    parts=(
        PartSpec("body", "primary"),
        PartSpec("neck", "secondary"),
        PartSpec("headstock", "dark", (60, 40, 30)),
        PartSpec("pegs", "accent", (205, 205, 215)),
        PartSpec("rosette", "accent", (236, 220, 160)),
        PartSpec("sound_hole", "dark", (20, 14, 10)),
        PartSpec("pickguard", "dark", (70, 30, 20)),
        PartSpec("bridge", "dark", (40, 25, 20)),
    ),
    keypoints=(
        ("headstock_top", 0.02, -0.92),
        ("upper_left_peg", -0.16, -0.9),
        ("upper_right_peg", 0.18, -0.92),
        ("nut", 0.0, -0.7),
        ("neck_middle", 0.0, -0.45),
        ("sound_hole", 0.0, 0.12),
        ("pickguard", 0.18, 0.32),
        ("bridge", 0.0, 0.64),
        ("bottom", 0.0, 0.86),
        ("upper_bout_left", -0.25, 0.0),
        ("upper_bout_right", 0.25, 0.0),
        ("lower_bout_left", -0.35, 0.52),
        ("lower_bout_right", 0.35, 0.52),
    ),
    primary_hsv=(0.08, 0.65, 0.78),
    secondary_hsv=(0.07, 0.55, 0.4),
    draw=_guitar,
)

TEMPLATE_SPECS: dict[str, TemplateSpec] = {s.wnid: s for s in (BEETLE, FISH, BIRD, MUSHROOM, TEAPOT, GUITAR)}
