//! The export formats: JSON lines, CSV (one column per envelope field, `data` as JSON text) and
//! Apache Parquet (typed columns, `data` as a JSON string column). Each writes part files that
//! are complete on their own, and `assemble` joins the parts into the final file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::record::{Record, COLUMNS};

/// Rows per Parquet record batch and row group: what a writer holds in memory at most.
const PARQUET_ROWS: usize = 16_384;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Csv,
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }
}

/// Writes one part file.
pub trait PartWriter {
    fn write(&mut self, record: &Record) -> anyhow::Result<()>;
    /// Flushes, syncs and closes the part.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// A writer of a new part file at `path`.
pub fn part_writer(format: Format, path: &Path) -> anyhow::Result<Box<dyn PartWriter>> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(match format {
        Format::Jsonl => Box::new(JsonLines(BufWriter::new(file))),
        // Parts have no header; `assemble` writes it once.
        Format::Csv => Box::new(Csv(csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file))),
        Format::Parquet => Box::new(Parquet::new(file)?),
    })
}

struct JsonLines(BufWriter<File>);

impl PartWriter for JsonLines {
    fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.0, &record.to_json())?;
        self.0.write_all(b"\n")?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let file = self.0.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

struct Csv(csv::Writer<File>);

impl PartWriter for Csv {
    fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        self.0.write_record(record.to_row())?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let file = self.0.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

/// The Parquet schema: the envelope's fields as typed columns, `data` as JSON text.
pub fn parquet_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let number = |name: &str| Field::new(name, DataType::UInt64, false);
    Arc::new(Schema::new(vec![
        text("stream", false),
        number("stream_sequence"),
        text("specversion", false),
        text("id", false),
        text("source", false),
        text("type", false),
        text("subject", false),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("datacontenttype", false),
        text("dataschema", false),
        number("sequence"),
        text("aggregatetype", false),
        text("correlationid", true),
        text("causationid", true),
        text("data", false),
    ]))
}

/// Column builders for one record batch, in `COLUMNS` order.
#[derive(Default)]
struct Columns {
    stream: StringBuilder,
    stream_sequence: UInt64Builder,
    specversion: StringBuilder,
    id: StringBuilder,
    source: StringBuilder,
    event_type: StringBuilder,
    subject: StringBuilder,
    time: TimestampMicrosecondBuilder,
    datacontenttype: StringBuilder,
    dataschema: StringBuilder,
    sequence: UInt64Builder,
    aggregatetype: StringBuilder,
    correlationid: StringBuilder,
    causationid: StringBuilder,
    data: StringBuilder,
    rows: usize,
}

impl Columns {
    fn push(&mut self, record: &Record) {
        let e = &record.envelope;
        self.stream.append_value(&record.stream);
        self.stream_sequence.append_value(record.stream_sequence);
        self.specversion.append_value(&e.specversion);
        self.id.append_value(e.id.to_string());
        self.source.append_value(&e.source);
        self.event_type.append_value(&e.event_type);
        self.subject.append_value(&e.subject);
        self.time.append_value(e.time.timestamp_micros());
        self.datacontenttype.append_value(&e.datacontenttype);
        self.dataschema.append_value(&e.dataschema);
        self.sequence.append_value(e.sequence);
        self.aggregatetype.append_value(&e.aggregatetype);
        self.correlationid.append_option(e.correlationid.as_deref());
        self.causationid.append_option(e.causationid.as_deref());
        self.data.append_value(e.data.to_string());
        self.rows += 1;
    }

    fn finish(&mut self, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.stream.finish()),
            Arc::new(self.stream_sequence.finish()),
            Arc::new(self.specversion.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.subject.finish()),
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.datacontenttype.finish()),
            Arc::new(self.dataschema.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.aggregatetype.finish()),
            Arc::new(self.correlationid.finish()),
            Arc::new(self.causationid.finish()),
            Arc::new(self.data.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(PARQUET_ROWS))
        .build()
}

struct Parquet {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    columns: Columns,
}

impl Parquet {
    fn new(file: File) -> anyhow::Result<Self> {
        let schema = parquet_schema();
        Ok(Self {
            writer: ArrowWriter::try_new(file, schema.clone(), Some(writer_properties()))?,
            schema,
            columns: Columns::default(),
        })
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.columns.rows > 0 {
            let batch = self.columns.finish(&self.schema)?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }
}

impl PartWriter for Parquet {
    fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        self.columns.push(record);
        if self.columns.rows >= PARQUET_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush()?;
        let file = self.writer.into_inner()?;
        file.sync_all()?;
        Ok(())
    }
}

/// Joins the parts, in order, into `out` (which must not exist yet), and syncs it.
pub fn assemble(format: Format, parts: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    match format {
        Format::Jsonl | Format::Csv => {
            let mut writer = BufWriter::new(file);
            if format == Format::Csv {
                let mut header = csv::Writer::from_writer(&mut writer);
                header.write_record(COLUMNS)?;
                header.flush()?;
            }
            for part in parts {
                let mut input = File::open(part)?;
                std::io::copy(&mut input, &mut writer)?;
            }
            let file = writer.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        Format::Parquet => {
            let schema = parquet_schema();
            let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties()))?;
            for part in parts {
                let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(part)?)?
                    .with_batch_size(PARQUET_ROWS)
                    .build()?;
                for batch in reader {
                    writer.write(&batch?)?;
                }
            }
            writer.into_inner()?.sync_all()?;
        }
    }
    Ok(())
}

/// Reads an exported file back, calling `each` for every event in file order.
pub fn read_file(
    format: Format,
    path: &Path,
    mut each: impl FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    match format {
        Format::Jsonl => {
            for line in BufReader::new(file).lines() {
                let value = serde_json::from_str(&line?)?;
                each(Record::from_json(value).map_err(anyhow::Error::msg)?)?;
            }
        }
        Format::Csv => {
            let mut reader = csv::Reader::from_reader(file);
            let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
            anyhow::ensure!(header == COLUMNS, "unexpected CSV header {header:?}");
            for row in reader.records() {
                let row: Vec<String> = row?.iter().map(str::to_owned).collect();
                each(Record::from_row(&row).map_err(anyhow::Error::msg)?)?;
            }
        }
        Format::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
            for batch in reader {
                for record in records_of(&batch?)? {
                    each(record)?;
                }
            }
        }
    }
    Ok(())
}

/// The events of one Parquet record batch.
fn records_of(batch: &RecordBatch) -> anyhow::Result<Vec<Record>> {
    let text = |name: &str| -> anyhow::Result<_> {
        Ok(batch
            .column_by_name(name)
            .with_context(|| format!("no column {name}"))?
            .as_string::<i32>()
            .clone())
    };
    let number = |name: &str| -> anyhow::Result<_> {
        Ok(batch
            .column_by_name(name)
            .with_context(|| format!("no column {name}"))?
            .as_primitive::<UInt64Type>()
            .clone())
    };
    let (stream, stream_sequence, specversion, id) = (
        text("stream")?,
        number("stream_sequence")?,
        text("specversion")?,
        text("id")?,
    );
    let (source, event_type, subject) = (text("source")?, text("type")?, text("subject")?);
    let time = batch
        .column_by_name("time")
        .context("no column time")?
        .as_primitive::<TimestampMicrosecondType>()
        .clone();
    let (datacontenttype, dataschema, sequence) = (
        text("datacontenttype")?,
        text("dataschema")?,
        number("sequence")?,
    );
    let (aggregatetype, correlationid, causationid, data) = (
        text("aggregatetype")?,
        text("correlationid")?,
        text("causationid")?,
        text("data")?,
    );
    let optional = |column: &arrow_array::StringArray, i: usize| {
        (!column.is_null(i)).then(|| column.value(i).to_owned())
    };
    (0..batch.num_rows())
        .map(|i| {
            Ok(Record {
                stream: stream.value(i).to_owned(),
                stream_sequence: stream_sequence.value(i),
                envelope: messaging::Envelope {
                    specversion: specversion.value(i).to_owned(),
                    id: id.value(i).parse()?,
                    source: source.value(i).to_owned(),
                    event_type: event_type.value(i).to_owned(),
                    subject: subject.value(i).to_owned(),
                    time: DateTime::<Utc>::from_timestamp_micros(time.value(i))
                        .context("time out of range")?,
                    datacontenttype: datacontenttype.value(i).to_owned(),
                    dataschema: dataschema.value(i).to_owned(),
                    sequence: sequence.value(i),
                    aggregatetype: aggregatetype.value(i).to_owned(),
                    correlationid: optional(&correlationid, i),
                    causationid: optional(&causationid, i),
                    data: serde_json::from_str(data.value(i))?,
                },
            })
        })
        .collect()
}
