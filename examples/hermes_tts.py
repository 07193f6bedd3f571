# hermes_tts.py: a Rhasspy-compatible text-to-speech service, until SIGTERM or Ctrl-C
import voicebus
from voicebus import Event, EventBus, EventType


async def main() -> None:
    async with EventBus(client_id="hermes-tts") as bus:  # the broker: $VOICEBUS_URL

        async def say(event: Event) -> None:  # hermes/tts/say, from Rhasspy or voicebus
            site = event.data["siteId"]
            print(f"tts: {site} says {event.data['text']!r}", flush=True)  # synthesise, play
            await bus.emit(
                EventType.TTS_COMPLETED,  # hermes/tts/sayFinished: finished *playing*
                {
                    "id": event.data.get("id"),  # the request's id and session
                    "siteId": site,
                    "sessionId": event.data.get("sessionId"),
                },
                correlation_id=event.correlation_id,
            )

        bus.subscribe(EventType.TTS_SAY, say)
        await bus.ready()  # the broker acknowledged the subscription
        print("hermes-tts: ready", flush=True)
        await bus.run_forever()


voicebus.run(main)
