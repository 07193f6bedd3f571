# hermes_intents.py: answers Rhasspy intents, until SIGTERM or Ctrl-C
import voicebus
from voicebus import Event, EventBus, EventType


def answer(intent: str, slots: dict[str, object]) -> str:
    if intent == "LightOn":
        return f"Turning on the {slots.get('room', 'room')} light"
    return f"Sorry, I cannot do {intent} yet"


async def main() -> None:
    async with EventBus(client_id="hermes-intents") as bus:  # the broker: $VOICEBUS_URL

        async def on_intent(event: Event) -> None:  # every hermes/intent/<name>
            slots = {s["slotName"]: s["value"].get("value") for s in event.data.get("slots", [])}
            text = answer(event.data["intentName"], slots)  # intentName: from the topic
            session = event.data.get("sessionId")
            print(f"intents: {event.data['intentName']} -> {text!r}", flush=True)
            if session is not None:  # end the dialogue session, saying the answer
                await bus.emit(EventType.SESSION_END, {"sessionId": session, "text": text})
            else:  # an intent outside a dialogue session: just say the answer
                await bus.emit(EventType.TTS_SAY, {"text": text, "siteId": event.data["siteId"]})

        bus.subscribe(EventType.INTENT_RECOGNIZED, on_intent)
        await bus.ready()
        print("hermes-intents: ready", flush=True)
        await bus.run_forever()


voicebus.run(main)
