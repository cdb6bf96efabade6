"""``python -m dualsend_app.simulators``: run both partner simulators."""

from dualsend_app.simulators.server import main

if __name__ == "__main__":
    main()
