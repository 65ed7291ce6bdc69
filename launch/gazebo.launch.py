"""Gazebo (gz sim) world plus ros_gz_bridge topic mapping plus the controller (diff-drive).

For users with Gazebo and ros_gz installed (not available in this project's CI):

    ros2 launch lnn_control gazebo.launch.py world:=<world.sdf> model:=<policy.npz>

The world must contain a diff-drive robot publishing odometry and a 360-degree lidar on the
gz topics named by the `gz_*` arguments; the bridge maps them to /odom, /scan, /cmd_vel, /clock.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("lnn_control")
    gz_share = get_package_share_directory("ros_gz_sim")
    args = [
        DeclareLaunchArgument("world", default_value="empty.sdf", description="Gazebo world (SDF) to load"),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "diff_drive.yaml"),
            description="Controller params file",
        ),
        DeclareLaunchArgument(
            "model",
            default_value=os.path.join(share, "models", "diff_drive.npz"),
            description="Policy .npz for the controller",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the controller"),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="Configure and activate on start"
        ),
        DeclareLaunchArgument(
            "gz_odom", default_value="/model/robot/odometry", description="gz odometry topic"
        ),
        DeclareLaunchArgument("gz_scan", default_value="/lidar", description="gz laser scan topic"),
        DeclareLaunchArgument(
            "gz_cmd_vel", default_value="/model/robot/cmd_vel", description="gz twist topic"
        ),
    ]
    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(gz_share, "launch", "gz_sim.launch.py")),
        launch_arguments={"gz_args": ["-r ", LaunchConfiguration("world")]}.items(),
    )
    # ros_gz_bridge syntax: gz_topic@ros_type[gz_type (gz -> ROS), ]gz_type (ROS -> gz)
    bridge = Node(
        package="ros_gz_bridge",
        executable="parameter_bridge",
        name="gz_bridge",
        output="screen",
        arguments=[
            "/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock",
            [LaunchConfiguration("gz_odom"), "@nav_msgs/msg/Odometry[gz.msgs.Odometry"],
            [LaunchConfiguration("gz_scan"), "@sensor_msgs/msg/LaserScan[gz.msgs.LaserScan"],
            [LaunchConfiguration("gz_cmd_vel"), "@geometry_msgs/msg/Twist]gz.msgs.Twist"],
        ],
        remappings=[
            (LaunchConfiguration("gz_odom"), "/odom"),
            (LaunchConfiguration("gz_scan"), "/scan"),
            (LaunchConfiguration("gz_cmd_vel"), "/cmd_vel"),
        ],
    )
    controller = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "controller.launch.py")),
        launch_arguments={
            "params_file": LaunchConfiguration("params_file"),
            "model": LaunchConfiguration("model"),
            "namespace": LaunchConfiguration("namespace"),
            "use_sim_time": "true",
            "autostart": LaunchConfiguration("autostart"),
        }.items(),
    )
    return LaunchDescription([*args, gazebo, bridge, controller])
