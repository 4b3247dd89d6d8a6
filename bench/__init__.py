"""The benchmark harness behind ``edge-gateway bench``: each scenario runs in a child process (the
"gateway process"), which reports its samples in/out, its CPU time (user+sys over wall, % of one core)
and its peak RSS; the parent prints a Markdown table."""
