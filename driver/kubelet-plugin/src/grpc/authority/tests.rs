#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use loona_hpack::Decoder;
use proptest::prelude::*;

use super::*;

/// The percent-encoded socket path grpc-go sends for a bare path target.
const GRPC_GO: &[u8] = b"%2Fvar%2Flib%2Fkubelet%2Fplugins_registry%2Fhal.dra.dev-reg.sock";
const RAW_PATH: &[u8] = b"/var/lib/kubelet/plugins_registry/hal.dra.dev-reg.sock";

/// An HPACK string literal without Huffman coding (lengths under 127).
fn string(value: &[u8]) -> Vec<u8> {
    assert!(value.len() < 127);
    let mut out = vec![value.len() as u8];
    out.extend_from_slice(value);
    out
}

/// A literal field with incremental indexing and an indexed name from the static table.
fn indexed_name(index: u8, value: &[u8]) -> Vec<u8> {
    assert!(index < 63);
    let mut out = vec![0x40 | index];
    out.extend(string(value));
    out
}

/// A literal field without indexing and a literal name.
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(string(name));
    out.extend(string(value));
    out
}

/// The pseudo-headers of a gRPC call as a client encodes them: `:method POST` (static 3),
/// `:scheme http` (static 6), `:path` (static name 4), then `:authority` (static name 1) as given,
/// then `content-type`.
fn request_block(authority: Option<&[u8]>) -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    block.extend(indexed_name(4, b"/pluginregistration.Registration/GetInfo"));
    if let Some(authority) = authority {
        block.extend(indexed_name(1, authority));
    }
    block.extend(literal(b"content-type", b"application/grpc"));
    block
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

/// A frame as h2 reads it from the rewriter's output; header blocks already decoded with h2's
/// HPACK context.
#[derive(Debug, PartialEq)]
enum Seen {
    Headers {
        stream: u32,
        flags: u8,
        priority: Option<Vec<u8>>,
        fields: Vec<(String, String)>,
    },
    Other {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    },
}

/// Reads the rewriter's output as h2 would: the preface, then frames; checks every frame fits the
/// smallest max frame size and reassembles header blocks.
fn as_h2_sees_it(output: &[u8]) -> Vec<Seen> {
    assert_eq!(
        &output[..PREFACE.len()],
        PREFACE,
        "the preface is passed on"
    );
    let mut decoder = Decoder::new();
    let mut rest = &output[PREFACE.len()..];
    let mut seen = Vec::new();
    // An open block: stream, flags, priority fields, fragments.
    type Open = (u32, u8, Option<Vec<u8>>, Vec<u8>);
    let mut open: Option<Open> = None;
    while !rest.is_empty() {
        let header = FrameHeader::parse(rest);
        let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + header.len];
        rest = &rest[FRAME_HEADER_LEN + header.len..];
        match header.kind {
            FRAME_HEADERS | FRAME_CONTINUATION => {
                assert!(header.len <= OUT_FRAME_LEN, "frame of {} bytes", header.len);
                if header.kind == FRAME_HEADERS {
                    assert!(open.is_none());
                    assert_eq!(header.flags & FLAG_PADDED, 0, "padding is dropped");
                    let (priority, fragment) = headers_payload(&header, payload).unwrap();
                    open = Some((
                        header.stream_id,
                        header.flags & !FLAG_END_HEADERS,
                        priority.map(|p| p.to_vec()),
                        fragment.to_vec(),
                    ));
                } else {
                    let block = open.as_mut().expect("CONTINUATION inside a block");
                    assert_eq!(block.0, header.stream_id);
                    assert_eq!(header.flags & !FLAG_END_HEADERS, 0);
                    block.3.extend_from_slice(payload);
                }
                if header.flags & FLAG_END_HEADERS != 0 {
                    let (stream, flags, priority, block) = open.take().unwrap();
                    let fields = decoder
                        .decode(&block)
                        .unwrap()
                        .into_iter()
                        .map(|(n, v)| {
                            (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                        })
                        .collect();
                    seen.push(Seen::Headers {
                        stream,
                        flags,
                        priority,
                        fields,
                    });
                }
            }
            kind => seen.push(Seen::Other {
                kind,
                flags: header.flags,
                stream: header.stream_id,
                payload: payload.to_vec(),
            }),
        }
    }
    assert!(open.is_none(), "no header block left open");
    seen
}

fn rewrite(input: &[u8]) -> io::Result<(Vec<u8>, u64)> {
    let mut rewriter = Rewriter::new();
    rewriter.feed(input)?;
    Ok((rewriter.drain(), rewriter.replaced()))
}

fn authorities(seen: &[Seen]) -> Vec<Option<String>> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Headers { fields, .. } => Some(
                fields
                    .iter()
                    .find(|(n, _)| n == ":authority")
                    .map(|(_, v)| v.clone()),
            ),
            Seen::Other { .. } => None,
        })
        .collect()
}

#[test]
fn authorities_h2_refuses_become_localhost_and_others_are_kept() {
    for (sent, expected) in [
        (Some(GRPC_GO), Some("localhost")),
        (Some(RAW_PATH), Some("localhost")),
        (Some(&b""[..]), Some("localhost")),
        (Some(&b"localhost"[..]), Some("localhost")),
        (Some(&b"dra.sock:0"[..]), Some("dra.sock:0")),
        (None, None),
    ] {
        let input = connection(&[frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(sent),
        )]);
        let (output, replaced) = rewrite(&input).unwrap();
        let seen = as_h2_sees_it(&output);
        assert_eq!(
            authorities(&seen),
            vec![expected.map(str::to_owned)],
            "{sent:?}"
        );
        assert_eq!(
            replaced,
            u64::from(expected != sent.map(|s| std::str::from_utf8(s).unwrap()))
        );
        let Seen::Headers { fields, .. } = &seen[1] else {
            panic!("{seen:?}")
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let mut wanted = vec![":method", ":scheme", ":path"];
        if sent.is_some() {
            wanted.push(":authority");
        }
        wanted.push("content-type");
        assert_eq!(names, wanted, "every other field is kept, in order");
        assert!(is_valid_authority(b"localhost"));
        assert!(!is_valid_authority(GRPC_GO) && !is_valid_authority(RAW_PATH));
    }
}

#[test]
fn a_later_reference_to_the_clients_table_entry_reads_the_replacement() {
    // grpc-go and C-core index `:authority` on the first call and send one byte (the dynamic
    // table's newest entry, index 62) on later calls of the connection.
    // The first block adds `:path` and then `:authority` to the table, so `:authority` is the newest
    // entry (index 62) when the second block starts.
    let mut second = vec![0x83, 0x86, 0x80 | 62];
    second.extend(indexed_name(
        4,
        b"/pluginregistration.Registration/NotifyRegistrationStatus",
    ));
    let input = connection(&[
        frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &request_block(Some(GRPC_GO)),
        ),
        frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            &second,
        ),
    ]);
    let (output, replaced) = rewrite(&input).unwrap();
    let seen = as_h2_sees_it(&output);
    assert_eq!(
        authorities(&seen),
        vec![Some("localhost".to_owned()), Some("localhost".to_owned())]
    );
    assert_eq!(replaced, 2);
    let Seen::Headers { stream, flags, .. } = &seen[2] else {
        panic!("{seen:?}")
    };
    assert_eq!((*stream, *flags), (3, FLAG_END_STREAM));
}

#[test]
fn other_frames_pass_unchanged_and_padding_priority_and_continuations_are_handled() {
    let block = request_block(Some(GRPC_GO));
    let (head, tail) = block.split_at(7);
    // PADDED (3 bytes of padding) and PRIORITY, then a CONTINUATION with the rest.
    let mut headers = vec![3u8];
    headers.extend_from_slice(&[0, 0, 0, 0, 15]);
    headers.extend_from_slice(head);
    headers.extend_from_slice(&[0, 0, 0]);
    let data = frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]);
    let ping = frame(0x6, 0, 0, b"12345678");
    let input = connection(&[
        ping.clone(),
        frame(FRAME_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &headers),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, tail),
        data.clone(),
    ]);
    let (output, _) = rewrite(&input).unwrap();
    let seen = as_h2_sees_it(&output);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        seen[1],
        Seen::Other {
            kind: 0x6,
            flags: 0,
            stream: 0,
            payload: b"12345678".to_vec()
        }
    );
    let Seen::Headers {
        stream,
        flags,
        priority,
        ..
    } = &seen[2]
    else {
        panic!("{seen:?}")
    };
    assert_eq!(*stream, 1);
    assert_eq!(*flags, FLAG_PRIORITY);
    assert_eq!(priority.as_deref(), Some(&[0u8, 0, 0, 0, 15][..]));
    assert_eq!(authorities(&seen), vec![Some("localhost".to_owned())]);
    assert!(output.ends_with(&data), "DATA is passed byte for byte");
}

#[test]
fn a_block_larger_than_one_frame_is_split_into_continuations() {
    let mut block = request_block(Some(GRPC_GO));
    // 200 fields of 100 bytes: 20 KB, more than one 16 KiB frame.
    for i in 0..200 {
        block.extend(literal(format!("x-field-{i:03}").as_bytes(), &[b'v'; 100]));
    }
    let input = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]);
    let (output, _) = rewrite(&input).unwrap();
    let seen = as_h2_sees_it(&output);
    let Seen::Headers { fields, .. } = &seen[1] else {
        panic!("{seen:?}")
    };
    assert_eq!(fields.len(), 205);
    assert_eq!(authorities(&seen), vec![Some("localhost".to_owned())]);
}

#[test]
fn input_that_is_not_http2_is_passed_on_untouched() {
    let input = b"GET / HTTP/1.1\r\nHost: %2F\r\n\r\n";
    let (output, replaced) = rewrite(input).unwrap();
    assert_eq!(output, input);
    assert_eq!(replaced, 0);
}

#[test]
fn a_connection_that_ends_inside_a_frame_hands_h2_what_came() {
    let input = connection(&[frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &request_block(None),
    )]);
    let cut = &input[..input.len() - 3];
    let mut rewriter = Rewriter::new();
    rewriter.feed(cut).unwrap();
    rewriter.finish();
    assert_eq!(rewriter.drain(), cut);
}

#[test]
fn protocol_errors_end_the_connection() {
    let data = frame(0x0, 0, 1, b"x");
    let bad = [
        // DATA inside a header block.
        connection(&[
            frame(FRAME_HEADERS, 0, 1, &request_block(None)),
            data.clone(),
        ]),
        // CONTINUATION without HEADERS, and for another stream.
        connection(&[frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x83])]),
        connection(&[
            frame(FRAME_HEADERS, 0, 1, &[0x83]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &[0x86]),
        ]),
        // An index past both tables.
        connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 70])]),
        // Padding longer than the payload.
        connection(&[frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_PADDED,
            1,
            &[9, 0x83],
        )]),
        // A table size update over the advertised 4096.
        connection(&[frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0x3f, 0xe1, 0x3f, 0x83],
        )]),
    ];
    for input in bad {
        let error = rewrite(&input).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}

#[test]
fn header_blocks_and_lists_are_bounded() {
    // A block over the bound is refused as soon as its frame header arrives, before its payload.
    let mut header = frame(FRAME_HEADERS, 0, 1, &[]);
    let len = MAX_HEADER_BLOCK + 1;
    header[..3].copy_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    let mut input = PREFACE.to_vec();
    input.extend(header);
    assert!(rewrite(&input).is_err());

    // An HPACK bomb: one 4000-byte entry, then one byte per reference to it.
    let mut block = vec![0x40];
    block.extend([0x01, b'x']);
    block.extend([0x7f, 0x81, 0x1e]); // a value length of 127 + 3841 = 3968 bytes
    block.extend(std::iter::repeat_n(b'v', 3968));
    block.extend(std::iter::repeat_n(0x80 | 62, 10_000));
    let input = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]);
    let error = rewrite(&input).unwrap_err();
    assert!(error.to_string().contains("header list"), "{error}");
}

#[test]
fn after_an_error_nothing_more_is_read() {
    let mut rewriter = Rewriter::new();
    let input = connection(&[frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x83])]);
    assert!(rewriter.feed(&input).is_err());
    let before = rewriter.drain().len();
    rewriter.feed(b"more").unwrap();
    assert_eq!(
        rewriter.drain(),
        b"more",
        "what follows goes to h2 unread, which closes"
    );
    assert!(before < input.len());
}

proptest! {
    /// However the client's bytes are cut by the socket, h2 reads the same frames.
    #[test]
    fn any_cut_of_the_input_gives_the_same_output(cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let input = connection(&[
            frame(0x6, 0, 0, b"12345678"),
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &request_block(Some(GRPC_GO))),
            frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]),
            frame(FRAME_HEADERS, 0, 3, &request_block(Some(RAW_PATH))[..6]),
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &request_block(Some(RAW_PATH))[6..]),
        ]);
        let (whole, _) = rewrite(&input).unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % input.len()).collect();
        cuts.sort_unstable();
        let mut rewriter = Rewriter::new();
        let mut output = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            rewriter.feed(&input[at..cut]).unwrap();
            output.extend(rewriter.drain());
            at = cut;
        }
        prop_assert_eq!(output, whole);
    }

    /// Arbitrary bytes after the preface never panic; they are rewritten or refused.
    #[test]
    fn arbitrary_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut input = PREFACE.to_vec();
        input.extend(body);
        let mut rewriter = Rewriter::new();
        let _ = rewriter.feed(&input);
        rewriter.finish();
        let _ = rewriter.drain();
    }
}
