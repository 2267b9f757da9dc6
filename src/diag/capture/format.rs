//! The capture file as bytes: a pcap or pcapng header, then one record per
//! packet, written by `pcap-file` into a buffer the capture thread hands out
//! in chunks. Every chunk is whole records, so a stream cut between chunks is
//! still a valid file.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use super::Format;

/// Room kept under the byte cap for the pcapng statistics block at the end.
pub const TRAILER_RESERVE: u64 = 256;
/// The longest closing comment written into a pcapng file.
const MAX_COMMENT: usize = 160;

/// What the file says about its capture.
pub struct FileInfo<'a> {
    pub linktype: i32,
    pub snaplen: u32,
    pub interface: &'a str,
    pub filter: &'a str,
    /// Written into pcapng as the interface's description.
    pub description: &'a str,
}

/// One packet as libpcap delivered it.
pub struct Packet<'a> {
    /// Since the Unix epoch.
    pub timestamp: Duration,
    /// Length on the wire; `data` may be shorter (snap length).
    pub original_len: u32,
    pub data: &'a [u8],
}

/// Counters for the pcapng closing block.
pub struct Closing<'a> {
    pub started: Duration,
    pub ended: Duration,
    pub received: u64,
    pub dropped: u64,
    pub delivered: u64,
    pub comment: &'a str,
}

/// A growable buffer the writers append to and the thread drains.
#[derive(Clone, Default)]
struct Buffer(Rc<RefCell<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Pcap(PcapWriter<Buffer>),
    PcapNg(PcapNgWriter<Buffer>),
}

/// Writes one capture file, holding what is not yet handed out.
pub struct Encoder {
    buffer: Buffer,
    writer: Writer,
    snaplen: u32,
}

impl Encoder {
    /// An encoder whose buffer already holds the file's header.
    pub fn new(format: Format, info: &FileInfo<'_>) -> Result<Self, PcapError> {
        let buffer = Buffer::default();
        let datalink = DataLink::from(info.linktype as u32);
        let writer = match format {
            Format::Pcap => Writer::Pcap(PcapWriter::with_header(
                buffer.clone(),
                PcapHeader {
                    version_major: 2,
                    version_minor: 4,
                    ts_correction: 0,
                    ts_accuracy: 0,
                    snaplen: info.snaplen,
                    datalink,
                    ts_resolution: TsResolution::MicroSecond,
                    endianness: Endianness::native(),
                },
            )?),
            Format::PcapNg => {
                let section = SectionHeaderBlock {
                    endianness: Endianness::native(),
                    major_version: 1,
                    minor_version: 0,
                    section_length: -1,
                    options: vec![
                        SectionHeaderOption::UserApplication(Cow::Owned(format!(
                            "nsdebug {}",
                            env!("CARGO_PKG_VERSION")
                        ))),
                        SectionHeaderOption::OS(Cow::Borrowed("Linux")),
                    ],
                };
                let mut writer = PcapNgWriter::with_section_header(buffer.clone(), section)?;
                let mut options = vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(info.interface.to_string())),
                    InterfaceDescriptionOption::IfDescription(Cow::Owned(
                        info.description.to_string(),
                    )),
                    // Enhanced packet blocks carry nanoseconds (`pcap-file`).
                    InterfaceDescriptionOption::IfTsResol(9),
                ];
                if !info.filter.is_empty() {
                    // The first byte says which filter language: 0 is libpcap's.
                    let mut filter = vec![0u8];
                    filter.extend_from_slice(info.filter.as_bytes());
                    options.push(InterfaceDescriptionOption::IfFilter(Cow::Owned(filter)));
                }
                writer.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: datalink,
                    snaplen: info.snaplen,
                    options,
                })?;
                Writer::PcapNg(writer)
            }
        };
        Ok(Self {
            buffer,
            writer,
            snaplen: info.snaplen,
        })
    }

    /// Appends one packet's record.
    pub fn write(&mut self, packet: &Packet<'_>) -> Result<(), PcapError> {
        let data = &packet.data[..packet.data.len().min(self.snaplen as usize)];
        let original_len = packet.original_len.max(data.len() as u32);
        match &mut self.writer {
            Writer::Pcap(writer) => {
                writer.write_packet(&PcapPacket::new(packet.timestamp, original_len, data))?;
            }
            Writer::PcapNg(writer) => {
                writer.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: packet.timestamp,
                    original_len,
                    data: Cow::Borrowed(data),
                    options: vec![],
                })?;
            }
        }
        Ok(())
    }

    /// Appends what ends the file: for pcapng an interface statistics block
    /// with the counters and `comment`; pcap has no such thing.
    pub fn close(&mut self, closing: &Closing<'_>) -> Result<(), PcapError> {
        let Writer::PcapNg(writer) = &mut self.writer else {
            return Ok(());
        };
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let mut comment = closing.comment.to_string();
        if comment.len() > MAX_COMMENT {
            let mut end = MAX_COMMENT;
            while !comment.is_char_boundary(end) {
                end -= 1;
            }
            comment.truncate(end);
        }
        writer.write_pcapng_block(InterfaceStatisticsBlock {
            interface_id: 0,
            timestamp: nanos(closing.ended),
            options: vec![
                InterfaceStatisticsOption::Comment(Cow::Owned(comment)),
                InterfaceStatisticsOption::IsbStartTime(nanos(closing.started)),
                InterfaceStatisticsOption::IsbEndTime(nanos(closing.ended)),
                InterfaceStatisticsOption::IsbIfRecv(closing.received),
                InterfaceStatisticsOption::IsbOsDrop(closing.dropped),
                InterfaceStatisticsOption::IsbUsrDeliv(closing.delivered),
            ],
        })?;
        Ok(())
    }

    /// Bytes written and not yet taken.
    pub fn pending(&self) -> usize {
        self.buffer.0.borrow().len()
    }

    /// Forgets what was written after the first `len` pending bytes.
    pub fn truncate(&mut self, len: usize) {
        self.buffer.0.borrow_mut().truncate(len);
    }

    /// Takes every pending byte.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut *self.buffer.0.borrow_mut())
    }

    /// Puts back what [`Encoder::take`] returned, when it could not be handed
    /// out; nothing may have been written since.
    pub fn untake(&mut self, bytes: Vec<u8>) {
        let mut buffer = self.buffer.0.borrow_mut();
        debug_assert!(buffer.is_empty());
        *buffer = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    const ETHERNET: i32 = 1;

    fn info() -> FileInfo<'static> {
        FileInfo {
            linktype: ETHERNET,
            snaplen: 4,
            interface: "eth0",
            filter: "icmp",
            description: "pod ns/p",
        }
    }

    fn packet(data: &[u8]) -> Packet<'_> {
        Packet {
            timestamp: Duration::new(1_700_000_000, 123_456_000),
            original_len: 100,
            data,
        }
    }

    #[test]
    fn pcap_records_are_cut_at_the_snap_length() {
        let mut encoder = Encoder::new(Format::Pcap, &info()).unwrap();
        assert_eq!(encoder.pending(), 24, "the global header comes first");
        let mut file = encoder.take();
        encoder.write(&packet(b"abcdefgh")).unwrap();
        file.extend(encoder.take());
        // Read by hand: pcap-file's reader refuses orig_len > snaplen, which
        // every snapped capture has (tshark reads it).
        let (header, record) = file.split_at(24);
        let word = |bytes: &[u8], i: usize| {
            u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap())
        };
        assert_eq!(word(header, 0), 0xa1b2_c3d4, "microsecond magic");
        assert_eq!(word(header, 4), 4, "snaplen");
        assert_eq!(word(header, 5), ETHERNET as u32);
        assert_eq!((word(record, 0), word(record, 1)), (1_700_000_000, 123_456));
        assert_eq!(
            (word(record, 2), word(record, 3)),
            (4, 100),
            "incl_len, orig_len"
        );
        assert_eq!(&record[16..], b"abcd");
    }

    #[test]
    fn pcapng_has_one_interface_its_filter_and_closing_statistics() {
        let mut encoder = Encoder::new(Format::PcapNg, &info()).unwrap();
        encoder.write(&packet(b"xy")).unwrap();
        let kept = encoder.pending();
        // A record that does not fit is taken back whole.
        encoder.write(&packet(b"dropped")).unwrap();
        encoder.truncate(kept);
        encoder
            .close(&Closing {
                started: Duration::from_secs(1),
                ended: Duration::from_secs(2),
                received: 5,
                dropped: 1,
                delivered: 1,
                comment: "ended at the packet limit",
            })
            .unwrap();
        let file = encoder.take();
        assert!(file.len() as u64 - kept as u64 <= TRAILER_RESERVE);
        let mut reader = PcapNgReader::new(file.as_slice()).unwrap();
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block() {
            blocks.push(block.unwrap().into_owned());
        }
        let [
            Block::InterfaceDescription(idb),
            Block::EnhancedPacket(epb),
            Block::InterfaceStatistics(isb),
        ] = blocks.as_slice()
        else {
            panic!("unexpected blocks: {blocks:?}");
        };
        assert!(
            idb.options
                .contains(&InterfaceDescriptionOption::IfFilter(Cow::Borrowed(
                    b"\0icmp"
                )))
        );
        assert_eq!(&epb.data[..], b"xy");
        assert_eq!(
            epb.timestamp,
            Duration::new(1_700_000_000, 123_456_000),
            "nanoseconds, as if_tsresol says"
        );
        assert!(
            isb.options
                .contains(&InterfaceStatisticsOption::Comment(Cow::Borrowed(
                    "ended at the packet limit"
                )))
        );
    }

    #[test]
    fn the_closing_block_fits_its_reserve_whatever_the_comment() {
        let mut encoder = Encoder::new(Format::PcapNg, &info()).unwrap();
        let before = encoder.pending();
        let long = "é".repeat(500);
        encoder
            .close(&Closing {
                started: Duration::from_secs(1),
                ended: Duration::from_secs(2),
                received: u64::MAX,
                dropped: u64::MAX,
                delivered: u64::MAX,
                comment: &long,
            })
            .unwrap();
        assert!((encoder.pending() - before) as u64 <= TRAILER_RESERVE);
    }

    #[test]
    fn untaken_bytes_come_back_in_order() {
        let mut encoder = Encoder::new(Format::Pcap, &info()).unwrap();
        let header = encoder.take();
        encoder.untake(header.clone());
        encoder.write(&packet(b"ab")).unwrap();
        assert_eq!(&encoder.take()[..24], &header[..]);
    }
}
