"""The two built-in robots: shared constants and their MJCF models (source of truth).

Every number that the simulator, the expert controllers, the config YAMLs, training and the
demo share lives here (see docs/ARCHITECTURE.md, "The two built-in robots"). The MJCF strings
are generated from these constants so the model and the constants cannot drift apart.

diff_drive: a disc robot (radius ``DIFF_DRIVE_RADIUS``) in a square room with walls at
x = +-``ROOM_HALF_SIZE`` and y = +-``ROOM_HALF_SIZE`` and cylinder obstacles ``OBSTACLES``
(rows: centre x (m), centre y (m), radius (m)). The robot has slide joints x, y and a hinge
about z; it is driven kinematically by (v, omega) through joint velocities.

arm: three revolute joints (yaw about z, then two pitches about y), links
``ARM_LINK_LENGTHS``, position limits ``ARM_Q_LOWER`` / ``ARM_Q_UPPER`` (rad), velocity limits
``ARM_DQ_LIMIT`` (rad/s), torque limits ``ARM_TAU_LIMIT`` (N m) enforced at the motor actuators
through ``ctrlrange`` like real drives.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ROBOTS",
    "ROOM_HALF_SIZE",
    "WALL_HEIGHT",
    "DIFF_DRIVE_RADIUS",
    "DIFF_DRIVE_V_LIMIT",
    "DIFF_DRIVE_OMEGA_LIMIT",
    "OBSTACLES",
    "SCAN_BEAMS",
    "SCAN_RANGE_MIN",
    "SCAN_RANGE_MAX",
    "SCAN_HEIGHT",
    "GOAL_TOLERANCE",
    "ARM_JOINT_NAMES",
    "ARM_LINK_LENGTHS",
    "ARM_LINK_MASSES",
    "ARM_Q_LOWER",
    "ARM_Q_UPPER",
    "ARM_DQ_LIMIT",
    "ARM_TAU_LIMIT",
    "ARM_JOINT_DAMPING",
    "ARM_GOAL_Q_TOLERANCE",
    "ARM_GOAL_DQ_TOLERANCE",
    "SIM_TIMESTEP",
    "diff_drive_mjcf",
    "arm_mjcf",
    "mjcf_for",
]

#: built-in robots; ``lane`` (camera lane keeping) lives in :mod:`lnn_control.sim.lane`
ROBOTS: tuple[str, ...] = ("diff_drive", "arm", "lane")

# Physics step shared by both robots (s).
SIM_TIMESTEP: float = 0.002

# ---- diff_drive ----------------------------------------------------------------------------
ROOM_HALF_SIZE: float = 3.0  # walls at x = +-3 m and y = +-3 m (inner faces)
WALL_HEIGHT: float = 0.5  # m
WALL_THICKNESS: float = 0.1  # m, walls extend outward from the inner face
DIFF_DRIVE_RADIUS: float = 0.20  # m
DIFF_DRIVE_HEIGHT: float = 0.15  # m, body half-height is half of this
DIFF_DRIVE_V_LIMIT: float = 0.6  # m/s
DIFF_DRIVE_OMEGA_LIMIT: float = 2.0  # rad/s
#: Cylinder obstacles: (centre x, centre y, radius), metres, world frame.
OBSTACLES: np.ndarray = np.array(
    [
        [0.9, 0.3, 0.35],
        [-0.7, 1.1, 0.30],
        [0.1, -1.2, 0.40],
        [-1.2, -0.9, 0.25],
    ]
)
OBSTACLES.setflags(write=False)
SCAN_BEAMS: int = 72  # over 360 deg, first beam at angle 0 (robot x axis), counter-clockwise
SCAN_RANGE_MIN: float = 0.05  # m
SCAN_RANGE_MAX: float = 4.0  # m
SCAN_HEIGHT: float = 0.1  # m, height of the scanner above the floor
GOAL_TOLERANCE: float = 0.15  # m, goal reached when the centre is this close

# ---- arm -----------------------------------------------------------------------------------
ARM_JOINT_NAMES: tuple[str, str, str] = ("joint1", "joint2", "joint3")
ARM_LINK_LENGTHS: np.ndarray = np.array([0.40, 0.35, 0.25])  # m
ARM_LINK_MASSES: np.ndarray = np.array([2.0, 1.5, 0.8])  # kg
ARM_Q_LOWER: np.ndarray = np.array([-2.6, -1.9, -2.3])  # rad
ARM_Q_UPPER: np.ndarray = np.array([2.6, 1.9, 2.3])  # rad
ARM_DQ_LIMIT: np.ndarray = np.array([2.5, 2.5, 2.5])  # rad/s
ARM_TAU_LIMIT: np.ndarray = np.array([20.0, 14.0, 6.0])  # N m
ARM_JOINT_DAMPING: float = 0.05  # N m s/rad, viscous friction in each joint
ARM_GOAL_Q_TOLERANCE: float = 0.05  # rad
ARM_GOAL_DQ_TOLERANCE: float = 0.1  # rad/s
for _a in (ARM_LINK_LENGTHS, ARM_LINK_MASSES, ARM_Q_LOWER, ARM_Q_UPPER, ARM_DQ_LIMIT, ARM_TAU_LIMIT):
    _a.setflags(write=False)


def diff_drive_mjcf() -> str:
    """MJCF of the room, the cylinder obstacles and the disc robot.

    Walls and obstacles are static geoms of the world body (so ``mj_multiRay`` with
    ``flg_static=1`` sees them). The robot body ``base_link`` has joints ``x``, ``y``
    (slides, m) and ``theta`` (hinge about z, rad); qpos = (x, y, theta).
    """
    h = ROOM_HALF_SIZE
    t = WALL_THICKNESS
    wz = WALL_HEIGHT / 2
    walls = []
    for name, pos, size in (
        ("wall_px", (h + t / 2, 0.0), (t / 2, h + t, wz)),
        ("wall_nx", (-h - t / 2, 0.0), (t / 2, h + t, wz)),
        ("wall_py", (0.0, h + t / 2), (h + t, t / 2, wz)),
        ("wall_ny", (0.0, -h - t / 2), (h + t, t / 2, wz)),
    ):
        walls.append(
            f'<geom name="{name}" type="box" pos="{pos[0]} {pos[1]} {wz}" '
            f'size="{size[0]} {size[1]} {size[2]}" rgba="0.6 0.6 0.6 1"/>'
        )
    obstacles = [
        f'<geom name="obstacle{i}" type="cylinder" pos="{x} {y} {wz}" size="{r} {wz}" rgba="0.8 0.3 0.2 1"/>'
        for i, (x, y, r) in enumerate(OBSTACLES)
    ]
    hz = DIFF_DRIVE_HEIGHT / 2
    return f"""
<mujoco model="diff_drive_room">
  <compiler angle="radian"/>
  <option timestep="{SIM_TIMESTEP}" gravity="0 0 -9.81" integrator="Euler"/>
  <worldbody>
    <geom name="floor" type="plane" size="{h + 1} {h + 1} 0.1" rgba="0.9 0.9 0.9 1" group="1"/>
    {" ".join(walls)}
    {" ".join(obstacles)}
    <body name="base_link" pos="0 0 {hz + 0.01}">
      <joint name="x" type="slide" axis="1 0 0"/>
      <joint name="y" type="slide" axis="0 1 0"/>
      <joint name="theta" type="hinge" axis="0 0 1"/>
      <geom name="chassis" type="cylinder" size="{DIFF_DRIVE_RADIUS} {hz}" mass="5" rgba="0.2 0.4 0.8 1"/>
      <geom name="heading" type="box" pos="{DIFF_DRIVE_RADIUS * 0.6} 0 {hz}" size="0.05 0.02 0.01"
            contype="0" conaffinity="0" mass="0"/>
    </body>
  </worldbody>
</mujoco>
"""


def arm_mjcf() -> str:
    """MJCF of the 3-joint torque-controlled arm on a fixed base.

    joint1 (yaw about z) at the top of a 0.05 m pedestal, link1 vertical (0.40 m);
    joint2 and joint3 pitch about y, link2 (0.35 m) and link3 (0.25 m) point along +x at q = 0
    (so gravity loads joint2 and joint3 at q = 0). Motors have gear 1 and
    ``ctrlrange = +-ARM_TAU_LIMIT``: commands beyond the limit are clipped like a real drive.
    """
    l1, l2, l3 = (float(v) for v in ARM_LINK_LENGTHS)
    m1, m2, m3 = (float(v) for v in ARM_LINK_MASSES)
    lo, hi = ARM_Q_LOWER, ARM_Q_UPPER
    d = ARM_JOINT_DAMPING
    motors = "\n    ".join(
        f'<motor name="tau{i + 1}" joint="{j}" gear="1" ctrllimited="true" '
        f'ctrlrange="{-ARM_TAU_LIMIT[i]} {ARM_TAU_LIMIT[i]}"/>'
        for i, j in enumerate(ARM_JOINT_NAMES)
    )
    return f"""
<mujoco model="lnn_arm">
  <compiler angle="radian"/>
  <option timestep="{SIM_TIMESTEP}" gravity="0 0 -9.81" integrator="implicitfast"/>
  <default>
    <joint damping="{d}" armature="0.01" limited="true"/>
    <geom contype="1" conaffinity="1"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="2 2 0.1" rgba="0.9 0.9 0.9 1"/>
    <geom name="pedestal" type="cylinder" pos="0 0 0.025" size="0.08 0.025" contype="0" conaffinity="0"/>
    <body name="link1" pos="0 0 0.05">
      <joint name="joint1" type="hinge" axis="0 0 1" range="{lo[0]} {hi[0]}"/>
      <geom name="link1_geom" type="capsule" fromto="0 0 0 0 0 {l1}" size="0.04" mass="{m1}"
            contype="0" conaffinity="0"/>
      <body name="link2" pos="0 0 {l1}">
        <joint name="joint2" type="hinge" axis="0 1 0" range="{lo[1]} {hi[1]}"/>
        <geom name="link2_geom" type="capsule" fromto="0 0 0 {l2} 0 0" size="0.035" mass="{m2}"/>
        <body name="link3" pos="{l2} 0 0">
          <joint name="joint3" type="hinge" axis="0 1 0" range="{lo[2]} {hi[2]}"/>
          <geom name="link3_geom" type="capsule" fromto="0 0 0 {l3} 0 0" size="0.03" mass="{m3}"/>
          <site name="tool" pos="{l3} 0 0"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    {motors}
  </actuator>
</mujoco>
"""


def mjcf_for(robot: str) -> str:
    """MJCF text of a built-in robot by name (``"diff_drive"`` or ``"arm"``)."""
    if robot == "diff_drive":
        return diff_drive_mjcf()
    if robot == "arm":
        return arm_mjcf()
    if robot == "lane":  # the scene depends on the track: this is training track 0's
        from lnn_control.sim.lane import lane_mjcf, make_track

        return lane_mjcf(make_track(0))
    raise ValueError(f"robot must be one of {ROBOTS}, got {robot!r}")
