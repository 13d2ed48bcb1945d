"""Triton kernels on the CPU through Triton's interpreter, for the tests of ``lengthgen.ops.triton``.

TRITON_INTERPRET must be set before a kernel is decorated, so a test file runs its cases in fresh
subprocesses, one per group of cases and side by side: the test file itself run as a script with
the group's name, printing the group's results as JSON. The tests assert on the merged results.
"""

import importlib
import json
import os
import subprocess
import sys

import torch


def run_group(module: str, groups: dict, name: str) -> dict:
    """The cases of group ``name``, and the type of ``module``'s ``_fwd_kernel`` (an
    ``InterpretedFunction`` when the interpreter ran it, a ``JITFunction`` otherwise)."""
    mod = importlib.import_module(module)
    torch.manual_seed(0)
    out = {"kernel_type_" + name: type(mod._fwd_kernel).__name__}
    out.update({case: fn() for case, fn in groups[name].items()})
    return out


def interpret(test_file: str, groups: dict, timeout: int = 300) -> dict:
    """Run every group of ``test_file`` under TRITON_INTERPRET=1 and merge what they print."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    procs = [subprocess.Popen([sys.executable, test_file, g], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for g in groups]
    out = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        assert p.returncode == 0, stderr[-4000:]
        out.update(json.loads(stdout.strip().splitlines()[-1]))
    return out
