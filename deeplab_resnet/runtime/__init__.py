"""Where and how the network runs: devices, number formats, tf.distribute, stop requests.

`devices` (the devices in use, TF32, memory growth), `precision` (native number formats and the
fp32 fallback), `distribute` (strategies, the chief, `TF_CONFIG`) and `stop` (`StopRequest`). No
flags, no exits, no process-wide change unless asked. May import only the base modules.
"""
