"""The MQTT 5 transport (``mqtt://``, ``mqtts://``) on aiomqtt and paho.

Every access to a private paho/aiomqtt name lives in `paho_internals` (ruff SLF001
refuses one anywhere else; each line there is marked).
"""

from .options import MqttOptions
from .transport import MqttTransport

__all__ = ["MqttOptions", "MqttTransport"]
