"""Launch the eventful_detector node (and optionally RViz).

    ros2 launch eventful_perception eventful_perception.launch.py \
        image_topic:=/camera/image_raw token_budget:=0.3 use_rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("namespace", "", "namespace of the node and its topics"),
    ("image_topic", "image_raw", "camera topic remapped onto the node's image_raw "
     "(and <image_topic>/compressed onto image_raw/compressed)"),
    ("params_file", PathJoinSubstitution([FindPackageShare("eventful_perception"), "config",
                                          "params.yaml"]), "parameter file"),
    ("model", "default", "'default' or a Hugging Face checkpoint folder"),
    ("device", "cpu", "cpu | cuda | auto"),
    ("token_budget", "0.5", "fraction of tokens recomputed per frame (0.02-1.0)"),
    ("use_rviz", "false", "also start RViz showing image_raw and detection_image"),
    ("fastdds_profile", PathJoinSubstitution([FindPackageShare("eventful_perception"), "config",
                                              "fastdds_large_data.xml"]),
     "Fast DDS profile of the node (large shared-memory segment for images); '' for none"),
)


def generate_launch_description() -> LaunchDescription:
    """The node with its parameters file and overrides, plus RViz when use_rviz is true."""
    arg = LaunchConfiguration
    image_topic = arg("image_topic")
    profile = arg("fastdds_profile")
    detector = Node(
        package="eventful_perception", executable="eventful_detector",
        name="eventful_detector", namespace=arg("namespace"), output="screen",
        parameters=[arg("params_file"), {
            "model": arg("model"), "device": arg("device"),
            "token_budget": ParameterValue(arg("token_budget"), value_type=float)}],
        remappings=[("image_raw", image_topic),
                    ("image_raw/compressed", [image_topic, "/compressed"])],
        # Fast DDS 2.x (Humble, Jazzy) reads the first variable, Fast DDS 3 (Kilted) the second.
        additional_env={"FASTRTPS_DEFAULT_PROFILES_FILE": profile,
                        "FASTDDS_DEFAULT_PROFILES_FILE": profile})
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=arg("namespace"),
        arguments=["-d", PathJoinSubstitution([FindPackageShare("eventful_perception"),
                                               "config", "eventful_perception.rviz"])],
        remappings=[("image_raw", image_topic)],
        condition=IfCondition(arg("use_rviz")))
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription([*declared, detector, rviz])
