"""Built-in MuJoCo simulator (mujoco_sim) plus the controller, on sim time.

ros2 launch lnn_control sim.launch.py robot:=diff_drive model:=<policy.npz>
ros2 launch lnn_control sim.launch.py robot:=lane seed:=100000   (camera lane keeping, held-out track)
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("lnn_control")
    robot = LaunchConfiguration("robot")
    namespace = LaunchConfiguration("namespace")
    default_params = PathJoinSubstitution([share, "config", PythonExpression(["'", robot, "' + '.yaml'"])])
    default_model = PathJoinSubstitution([share, "models", PythonExpression(["'", robot, "' + '.npz'"])])
    args = [
        DeclareLaunchArgument(
            "robot",
            default_value="diff_drive",
            choices=["diff_drive", "arm", "lane"],
            description="Built-in robot",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=default_params,
            description="Controller params file (config/<robot>.yaml)",
        ),
        DeclareLaunchArgument(
            "model", default_value=default_model, description="Policy .npz for the controller"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of both nodes"),
        DeclareLaunchArgument(
            "seed",
            default_value="0",
            description="Simulator episode seed (start; lane: track, seeds >= 100000 are held-out tracks)",
        ),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="Configure and activate the controller on start"
        ),
    ]
    sim = Node(
        package="lnn_control",
        executable="mujoco_sim",
        name="mujoco_sim",
        namespace=namespace,
        output="screen",
        # use_sim_time makes the sim publish /clock and stamp with sim time (it steps on a steady
        # wall-clock timer, so it never waits on its own /clock)
        parameters=[{"robot": robot, "use_sim_time": True, "seed": LaunchConfiguration("seed")}],
    )
    controller = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "controller.launch.py")),
        launch_arguments={
            "params_file": LaunchConfiguration("params_file"),
            "model": LaunchConfiguration("model"),
            "namespace": namespace,
            "use_sim_time": "true",
            "autostart": LaunchConfiguration("autostart"),
        }.items(),
    )
    return LaunchDescription([*args, sim, controller])
