"""WebGPU access: device acquisition, shader sources, pipelines and dispatch."""
