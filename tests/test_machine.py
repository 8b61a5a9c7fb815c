"""What machine computed a result: the CPU capability torch dispatches to and its build, as recorded."""
import os
import subprocess
import sys

import torch

from nblib.runs import folders
from nblib.runs.machine import machine, torch_build


def test_versions_record_the_cpu_capability_and_the_torch_build():
    v = folders.versions("cpu")
    assert v["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert v["torch_build"] == torch_build() and v["torch_build"]["TORCH_VERSION"] == torch.__version__.split("+")[0]


def test_a_requested_capability_is_the_one_recorded():
    """``ATEN_CPU_CAPABILITY=default`` (every x86 CPU has it) is what a fresh interpreter reports and records."""
    code = ("from nblib.runs.machine import machine; m = machine(); "
            "print(m['cpu_capability'], m['aten_cpu_capability_env'])")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ATEN_CPU_CAPABILITY="default"),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["DEFAULT", "default"]
    assert machine()["torch_threads"] == torch.get_num_threads()
