"""Launch the lnn_controller lifecycle node; with autostart, configure then activate it.

    ros2 launch lnn_control controller.launch.py params_file:=<yaml> model:=<policy.npz>

Arguments: params_file, model, namespace, use_sim_time, autostart, log_level.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("lnn_control")
    params_file = LaunchConfiguration("params_file")
    model = LaunchConfiguration("model")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    autostart = LaunchConfiguration("autostart")

    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "diff_drive.yaml"),
            description="ROS params file: node settings, observation map, filter (config/<robot>.yaml)",
        ),
        DeclareLaunchArgument(
            "model",
            default_value=os.path.join(share, "models", "diff_drive.npz"),
            description="Policy .npz written by lnn_control.runtime.model_file.save_policy (sets model_file)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the controller node"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use /clock (true with a simulator)"
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="Configure and activate the lifecycle node on start (false: drive it yourself)",
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level"),
    ]

    controller = LifecycleNode(
        package="lnn_control",
        executable="lnn_controller",
        name="lnn_controller",
        namespace=namespace,
        output="screen",
        parameters=[params_file, {"model_file": model, "use_sim_time": use_sim_time}],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )

    def transition(tid: int) -> EmitEvent:
        return EmitEvent(
            event=ChangeState(lifecycle_node_matcher=matches_action(controller), transition_id=tid)
        )

    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(controller), transition_id=Transition.TRANSITION_CONFIGURE
        ),
        condition=IfCondition(autostart),
    )
    # activate as soon as configure has reached 'inactive'
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=controller,
            goal_state="inactive",
            entities=[transition(Transition.TRANSITION_ACTIVATE)],
        ),
        condition=IfCondition(autostart),
    )
    return LaunchDescription([*args, controller, activate, configure])
