"""A program that never ends, with a child that never ends (for the no-orphans tests).

usage: revati emulate -- python forever.py MARKER
Both processes carry MARKER on their command line so the test can find them.
"""
import subprocess
import sys
import time

marker = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)", marker])
print("ready", flush=True)
while True:
    time.sleep(0.01)
