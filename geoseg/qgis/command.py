"""Find and run the ``geoseg`` command line for a Processing algorithm.

Which ``geoseg``: the ``command`` given to the provider, else the ``GEOSEG_COMMAND``
environment variable, else the "geoseg command" Processing setting, else ``geoseg`` on PATH.
The value is a command line (``/opt/venv/bin/geoseg`` or ``/opt/venv/bin/python -m geoseg``).

Progress: geoseg draws tqdm bars on stderr; their percentages drive the Processing progress
bar and every other line goes to the algorithm log. Cancel stops the subprocess.
"""

import os
import re
import shlex
import shutil
import subprocess
import threading

from qgis.core import QgsProcessingException

#: Processing setting holding the geoseg command line
SETTING = "GEOSEG_COMMAND"
_PERCENT = re.compile(r"(\d{1,3})%\|")


def resolve_command(command=None):
    """The geoseg command line as a list, or a QgsProcessingException saying how to set it."""
    text = command or os.environ.get(SETTING) or _setting() or shutil.which("geoseg")
    if not text:
        raise QgsProcessingException(
            "geoseg is not on PATH; install it (pip install geoseg) or set Processing > Options "
            "> Providers > geoseg > 'geoseg command' (or the GEOSEG_COMMAND variable)"
        )
    return shlex.split(text) if isinstance(text, str) else list(text)


def _setting():
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # the Processing plugin is not loaded (a bare QGIS application)
        return None
    return ProcessingConfig.getSetting(SETTING) or None


def child_environment():
    """QGIS's environment without its Python paths, which would shadow geoseg's packages."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def run(command, args, feedback):
    """Run ``command + args``; stream its output to ``feedback``; return stdout's lines.

    Raises:
        QgsProcessingException: geoseg exited non-zero (its one-line error is the message)
            or the user cancelled.
    """
    argv = list(command) + [str(a) for a in args]
    feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in argv))
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(),
        text=True,
        errors="replace",
    )
    stdout = []
    # stdout is drained on a thread so a long output can never block the child
    reader = threading.Thread(target=lambda: stdout.append(process.stdout.read()), daemon=True)
    reader.start()
    errors = []
    # stderr carries progress (\r-separated tqdm updates) and log lines; read it as it comes
    line = ""
    while True:
        char = process.stderr.read(1)
        if feedback.isCanceled():
            process.terminate()
            process.wait()
            raise QgsProcessingException("geoseg was cancelled")
        if char in ("\r", "\n", ""):
            _report(line, feedback, errors)
            line = ""
            if char == "":
                break
        else:
            line += char
    code = process.wait()
    reader.join()
    lines = "".join(stdout).splitlines()
    for out in lines:
        feedback.pushInfo(out)
    if code != 0:
        message = errors[-1] if errors else f"geoseg exited with code {code}"
        raise QgsProcessingException(message)
    return lines


def _report(line, feedback, errors):
    line = line.strip()
    if not line:
        return
    percent = _PERCENT.search(line)
    if percent:
        feedback.setProgress(min(100, int(percent.group(1))))
    elif line.startswith("Error:"):
        errors.append(line)
        feedback.reportError(line)
    else:
        feedback.pushConsoleInfo(line)
