"""`python -m switchyard_emulator start --state-dir DIR ...`"""

from switchyard_emulator.cli import app

if __name__ == "__main__":
    app(prog_name="python -m switchyard_emulator")
