"""Soak: thousands of frames through the real node while the budget, the battery and the CPU
load keep changing; memory must stay flat and nothing may fail.

`make test` runs EVENTFUL_SOAK_FRAMES=300 (the default); `make soak` runs 10 000 and prints the
memory samples (also written to out/soak.json)."""
from __future__ import annotations

import json
import os
import random

import psutil
import pytest
from sensor_msgs.msg import BatteryState, Image
from std_msgs.msg import Float32
from tqdm import tqdm

from fault_helpers import NodeUnderFault
from node_harness import image_msg, video_frames
from ros_helpers import REPO

FRAMES = int(os.environ.get("EVENTFUL_SOAK_FRAMES", "300"))
CHANGE_EVERY = 25  # frames between budget / battery / CPU-load changes
BAD_EVERY = 150  # frames between malformed frames (each waits for the node to count it)
SAMPLES = 10
WARM_UP = max(50, FRAMES // 10)
# A leak of one 320x240 frame per frame would add 69 MB over 300 frames, 2.3 GB over 10 000.
RSS_GROWTH_LIMIT_MB = 25.0


def bad_frame(index: int) -> Image:
    msg = image_msg(video_frames(1, size=(32, 24))[0], index)
    msg.data = msg.data[:-1]
    return msg


@pytest.mark.timeout(max(600, FRAMES // 2))
def test_soak_memory_stays_flat_and_nothing_fails():
    rng = random.Random(0)
    frames = video_frames(40, size=(320, 240))
    node = NodeUnderFault({"short_side": 64, "budget_mode": "adaptive", "min_budget": 0.05})
    battery = node.peer.node.create_publisher(BatteryState, "battery_state", 10)
    cpu = node.peer.node.create_publisher(Float32, "cpu_load", 10)
    rss, stream_mb, budgets = [], [], set()
    pid = node.process.proc.pid
    try:
        for i in tqdm(range(FRAMES), desc="soak", disable=FRAMES < 1000):
            if i % CHANGE_EVERY == 0:
                [result] = node.peer.set_parameters({"token_budget": rng.uniform(0.05, 1.0)})
                assert result.successful, result.reason
                battery.publish(BatteryState(percentage=rng.uniform(0.0, 1.0),
                                             power_supply_status=rng.choice([1, 2, 3])))
                cpu.publish(Float32(data=rng.uniform(0.0, 1.0)))
            if i % BAD_EVERY == 0:  # the rejection path is soaked too
                node.publisher.publish(bad_frame(i))
                node.wait_for_value("inputs rejected", str(i // BAD_EVERY + 1))
            msg = image_msg(frames[i % len(frames)], i)
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i // 10, (i % 10) * 10**8
            node.send(msg)
            budgets.update(round(u.budget_effective, 3) for u in node.usage)
            # The lists of received messages are searched at every frame: keep them short.
            node.detections.clear()
            node.usage.clear()
            del node.arrays[:-1]
            if i >= WARM_UP and (i - WARM_UP) % max(1, (FRAMES - WARM_UP) // SAMPLES) == 0:
                rss.append(psutil.Process(pid).memory_info().rss / 1e6)
                node.peer.spin_until(lambda: int(node.values().get("frames processed", 0)) > i,
                                     10.0, "a status after this frame", node.process)
                stream_mb.append(node.values()["stream state MB"])
        node.wait_for_value("frames processed", str(FRAMES), timeout=60.0)
        values = node.values()
    finally:
        log = node.close()
    report = {"frames": FRAMES, "rss_mb": [round(r, 1) for r in rss],
              "rss_growth_mb": round(rss[-1] - rss[0], 1), "stream_state_mb": stream_mb,
              "distinct_budgets": len(budgets), "rejected": values["inputs rejected"]}
    print(json.dumps(report))
    (REPO / "out").mkdir(exist_ok=True)
    (REPO / "out" / "soak.json").write_text(json.dumps(report, indent=1))
    assert values["model errors"] == "0" and "Traceback" not in log and "[ERROR]" not in log
    assert int(values["inputs rejected"]) == len(range(0, FRAMES, BAD_EVERY))
    assert values["frames dropped (newest kept)"] == "0"
    assert len(budgets) > 5  # the budget really kept changing
    assert len(set(stream_mb)) == 1, stream_mb  # the stream state keeps its size
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT_MB, report
