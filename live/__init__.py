"""Live change alerts inside one gateway process: the LISTEN connection and the subscriber bus.

`live.listener.Listener` holds the process's one LISTEN connection (outside the request pool) on
the change-batch channel (models/unit_of_work.py) and the access channel
(models/access_events.py), and hands what arrives to `live.bus.Bus`, which fans it out to the
process's subscribers with bounded queues and bounded concurrent reads. `live.access` rebuilds a
subscriber's permissions and checks its session without touching it.
"""
