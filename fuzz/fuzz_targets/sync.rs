//! The sync channel's messages as the runtime and the init process decode
//! them (one JSON message per packet), and the exec FIFO's `StartMessage`
//! lines as `start` reads them; whatever decodes encodes back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lucid::process::channel::{decode, InitMessage, RuntimeMessage, StartMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode::<InitMessage>(data) {
        let bytes = serde_json::to_vec(&message).expect("a message encodes");
        assert_eq!(
            decode::<InitMessage>(&bytes).expect("decodes again"),
            message
        );
    }
    if let Ok(message) = decode::<RuntimeMessage>(data) {
        let bytes = serde_json::to_vec(&message).expect("a message encodes");
        assert_eq!(
            decode::<RuntimeMessage>(&bytes).expect("decodes again"),
            message
        );
    }
    if let Ok(messages) = StartMessage::parse_all(data) {
        let lines: Vec<u8> = messages.iter().flat_map(StartMessage::to_line).collect();
        assert_eq!(
            StartMessage::parse_all(&lines).expect("lines parse again"),
            messages
        );
    }
});
