"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt and paho.

Every access to a private paho/aiomqtt name lives in `link` (ruff SLF001 marks it).
"""

from .options import MqttOptions
from .transport import MqttTransport

__all__ = ["MqttOptions", "MqttTransport"]
