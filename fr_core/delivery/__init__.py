"""Stage 2, event to broker: the event models and their JSON schema (``events``), the
cooldown validator, the face JPEG (``imaging``), the durable outbox and its worker, the
``IoTClient`` that queues and sends, and the helpers transport plugins share
(``transports``).
"""
