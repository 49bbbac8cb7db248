//! REPORT_METRICS (`0x0005`): a data node sends named metric values to the placement manager.

use bytes::BufMut;

use crate::codec::{put_string, EncodeError, Reader};
use crate::error::DecodeError;
use crate::frame::Opcode;
use crate::msg::{empty_message, Message, MessageKind};
use crate::types::NodeId;

/// Most metrics in one report.
pub const MAX_METRICS: usize = 4096;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 255;

/// One named value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metric {
    /// Metric name, at most [`MAX_METRIC_NAME_BYTES`].
    pub name: String,
    /// Its value (a counter or gauge).
    pub value: u64,
}

/// REPORT_METRICS request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportMetricsRequest {
    /// The reporting node.
    pub node_id: NodeId,
    /// The values, at most [`MAX_METRICS`].
    pub metrics: Vec<Metric>,
}

impl Message for ReportMetricsRequest {
    const OPCODE: Opcode = Opcode::ReportMetrics;
    const KIND: MessageKind = MessageKind::Request;

    fn encoded_len(&self) -> usize {
        8 + self
            .metrics
            .iter()
            .map(|metric| 8 + 2 + metric.name.len())
            .sum::<usize>()
    }

    fn validate(&self) -> Result<(), EncodeError> {
        EncodeError::check_length("metrics", self.metrics.len(), MAX_METRICS)?;
        self.metrics.iter().try_for_each(|metric| {
            EncodeError::check_length("name", metric.name.len(), MAX_METRIC_NAME_BYTES)
        })
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32_le(self.node_id.0);
        buf.put_u32_le(self.metrics.len() as u32);
        for metric in &self.metrics {
            buf.put_u64_le(metric.value);
            put_string(buf, &metric.name);
        }
    }

    fn decode(header: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(Self::OPCODE, header);
        let node_id = NodeId(reader.u32("node_id")?);
        let count = reader.count_u32("metrics", 10, MAX_METRICS)?;
        let mut metrics = Vec::with_capacity(count);
        for _ in 0..count {
            let value = reader.u64("value")?;
            let name = reader.string("name", MAX_METRIC_NAME_BYTES)?;
            metrics.push(Metric { name, value });
        }
        reader.finish()?;
        Ok(ReportMetricsRequest { node_id, metrics })
    }
}

/// REPORT_METRICS response: empty header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportMetricsResponse {}

empty_message!(ReportMetricsResponse, ReportMetrics, Response, false);
