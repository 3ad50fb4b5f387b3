"""Test-session set-up shared by all test files."""
import os

# Every DDS participant of this run (this process and the nodes it starts) stays on loopback and
# in a domain of its own, so parallel runs on one machine never see each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
