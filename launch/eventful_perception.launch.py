"""Launch the eventful_detector node (and optionally RViz).

    ros2 launch eventful_perception eventful_perception.launch.py \
        image_topic:=/camera/image_raw token_budget:=0.3 use_rviz:=true

Before starting anything it checks that what was asked for is installed (rviz2 for
use_rviz:=true); if not, it says what is missing and starts nothing.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from eventful_perception.ros.launch_checks import as_bool, launch_problem, package_installed

ARGUMENTS = (
    ("namespace", "", "namespace of the node and its topics"),
    ("image_topic", "image_raw", "camera topic remapped onto the node's image_raw "
     "(and <image_topic>/compressed onto image_raw/compressed)"),
    ("params_file", PathJoinSubstitution([FindPackageShare("eventful_perception"), "config",
                                          "params.yaml"]), "parameter file"),
    ("model", "default", "'default' or a Hugging Face checkpoint folder"),
    ("device", "cpu", "cpu | cuda | auto"),
    ("token_budget", "0.5", "fraction of tokens recomputed per frame (0.02-1.0)"),
    ("managed", "false", "true: a lifecycle node that waits in 'unconfigured' for "
     "configure/activate (ros2 lifecycle set /eventful_detector configure)"),
    ("use_rviz", "false", "also start RViz showing image_raw and detection_image"),
    ("fastdds_profile", PathJoinSubstitution([FindPackageShare("eventful_perception"), "config",
                                              "fastdds_large_data.xml"]),
     "Fast DDS profile of the node (large shared-memory segment for images); '' for none"),
)


def _launch_setup(context: LaunchContext) -> list:
    """The actions, once the arguments are known; an exception here starts nothing."""
    arg = LaunchConfiguration
    problem = launch_problem(arg("use_rviz").perform(context), package_installed)
    if problem:
        raise RuntimeError(problem)
    image_topic = arg("image_topic")
    profile = arg("fastdds_profile")
    detector = Node(
        package="eventful_perception", executable="eventful_detector",
        name="eventful_detector", namespace=arg("namespace"), output="screen",
        parameters=[arg("params_file"), {
            "model": arg("model"), "device": arg("device"),
            "token_budget": ParameterValue(arg("token_budget"), value_type=float),
            "managed": ParameterValue(arg("managed"), value_type=bool)}],
        remappings=[("image_raw", image_topic),
                    ("image_raw/compressed", [image_topic, "/compressed"])],
        # Fast DDS 2.x (Humble, Jazzy) reads the first variable, Fast DDS 3 (Kilted) the second.
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": profile,
                        "FASTDDS_DEFAULT_PROFILES_FILE": profile})
    if not as_bool("use_rviz", arg("use_rviz").perform(context)):
        return [detector]
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=arg("namespace"),
        arguments=["-d", PathJoinSubstitution([FindPackageShare("eventful_perception"),
                                               "config", "eventful_perception.rviz"])],
        remappings=[("image_raw", image_topic)])
    return [detector, rviz]


def generate_launch_description() -> LaunchDescription:
    """The node with its parameters file and overrides, plus RViz when use_rviz is true."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription([*declared, OpaqueFunction(function=_launch_setup)])
