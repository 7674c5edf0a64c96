"""Where a run executes: devices and the mesh, many processes, host memory, the caches on disk
and where library logs go."""
