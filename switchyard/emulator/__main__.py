"""`python -m switchyard.emulator start --state-dir DIR ...`"""

from switchyard.emulator.cli import app

if __name__ == "__main__":
    app(prog_name="python -m switchyard.emulator")
