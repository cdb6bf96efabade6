"""``python -m devstack.simulators``: run both partner simulators."""

from devstack.simulators.server import main

if __name__ == "__main__":
    main()
