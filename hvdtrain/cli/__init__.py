"""The command line: click code and nothing else. ``main`` holds the group and the entry point;
each other module is one command or command group, over the library's plans and edges."""
