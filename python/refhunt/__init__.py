"""refhunt: find reference leaks in Python C extensions.

The command line (`refhunt run -- python app.py`) is the main entry point; this package holds
the agent that it loads into the Python process.
"""

__version__ = "0.1.0"
