//! Where a deployment writes its files: a local directory or `s3://bucket/prefix`. Parsed and
//! validated here, so the CLI and the Lambda functions reject the same bad values with the
//! same messages before anything is written.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct OutputError {
    pub field: String,
    pub message: String,
}

/// The root of every key a deployment writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLocation {
    LocalDir(String),
    S3 {
        bucket: String,
        /// Leading path inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
    },
}

impl OutputLocation {
    /// `s3://bucket[/prefix]` or a local path. `field` names the setting in errors.
    pub fn parse(field: &str, value: &str) -> Result<OutputLocation, OutputError> {
        let error = |message: String| OutputError {
            field: field.to_owned(),
            message,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(error("must not be empty".into()));
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(error("bucket '' is missing: use s3://bucket/prefix".into()));
            }
            check_bucket_name(bucket).map_err(|m| error(format!("bucket '{bucket}' {m}")))?;
            let prefix = prefix.trim_end_matches('/');
            check_prefix(prefix).map_err(|m| error(format!("prefix '{prefix}' {m}")))?;
            return Ok(OutputLocation::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(error(format!(
                "unsupported scheme '{scheme}://': use s3://bucket/prefix or a local directory"
            )));
        }
        Ok(OutputLocation::LocalDir(value.to_owned()))
    }

    pub fn prefix(&self) -> Option<&str> {
        match self {
            OutputLocation::LocalDir(_) => None,
            OutputLocation::S3 { prefix, .. } => Some(prefix.as_str()).filter(|p| !p.is_empty()),
        }
    }
}

impl fmt::Display for OutputLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputLocation::LocalDir(path) => f.write_str(path),
            OutputLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            OutputLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// S3's rules for bucket names (general purpose buckets).
pub fn check_bucket_name(bucket: &str) -> Result<(), String> {
    if !(3..=63).contains(&bucket.len()) {
        return Err("must be 3 to 63 characters long".into());
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err("may contain only lowercase letters, digits, '.' and '-'".into());
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_last_ok(bucket.chars().next()) || !first_last_ok(bucket.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    if bucket.contains("..") {
        return Err("must not contain '..'".into());
    }
    if bucket.split('.').count() == 4 && bucket.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err("must not look like an IP address".into());
    }
    Ok(())
}

/// Prefixes are limited to letters, digits and `-_.=` (what the SAM template allows too), so
/// keys never need escaping in Glue locations, COPY file lists or Snowflake stages, and no
/// prefix is read as a wildcard (`*`) in IAM policies or a storage integration's locations.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.starts_with('/') {
        return Err("must not start with '/'".into());
    }
    for segment in prefix.split('/') {
        if segment.is_empty() {
            return Err("must not contain empty segments ('//')".into());
        }
        if segment == "." || segment == ".." {
            return Err("must not contain '.' or '..' segments".into());
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.=".contains(*c)))
        {
            return Err(format!("contains '{c}': use letters, digits and -_.= only"));
        }
    }
    if prefix.len() > 512 {
        return Err("is longer than 512 characters".into());
    }
    Ok(())
}

/// An endpoint override must be an http(s) URL with a host, and plain HTTP only on loopback:
/// requests carry signed credentials, which must not cross a network in the clear.
pub fn check_endpoint_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("'{url}' is not a URL: use http://127.0.0.1:PORT or https://HOST")
    })?;
    let host_port = rest.split('/').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => Err(format!(
            "'{url}': plain http is allowed only on loopback (127.0.0.1, localhost); use https"
        )),
        other => Err(format!("'{url}': scheme '{other}' is not http or https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> OutputLocation {
        OutputLocation::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn parses_s3_urls_and_local_paths() {
        let parse = |v| OutputLocation::parse("output", v).unwrap();
        assert_eq!(parse("s3://my-bucket"), s3("my-bucket", ""));
        assert_eq!(parse("s3://my-bucket/"), s3("my-bucket", ""));
        assert_eq!(parse("s3://my.bucket/raw/v1/"), s3("my.bucket", "raw/v1"));
        assert_eq!(parse("s3://b01/raw").prefix(), Some("raw"));
        assert_eq!(parse("s3://b01").prefix(), None);
        assert_eq!(parse("s3://b01/raw=1").to_string(), "s3://b01/raw=1");
        assert_eq!(
            parse("./sluice-data"),
            OutputLocation::LocalDir("./sluice-data".into())
        );
    }

    #[test]
    fn rejects_bad_buckets_and_prefixes_naming_the_field() {
        let cases = [
            ("s3://", "bucket '' is missing"),
            ("s3:///raw", "bucket '' is missing"),
            ("s3://ab", "3 to 63 characters"),
            ("s3://My-Bucket", "lowercase letters"),
            ("s3://bucket_x", "lowercase letters"),
            ("s3://-bucket", "begin and end"),
            ("s3://a..b", "'..'"),
            ("s3://192.168.1.1", "IP address"),
            ("s3://bucket/raw//x", "empty segments"),
            ("s3://bucket/raw/../x", "'.' or '..'"),
            ("s3://bucket/raw data", "contains ' '"),
            ("s3://bucket/raw#1", "contains '#'"),
            ("s3://bucket/raw*", "contains '*'"),
            ("gs://bucket/raw", "unsupported scheme 'gs://'"),
            ("  ", "must not be empty"),
        ];
        for (value, expected) in cases {
            let err = OutputLocation::parse("SLUICE_OUTPUT", value).unwrap_err();
            assert_eq!(err.field, "SLUICE_OUTPUT");
            assert!(
                err.to_string().contains(expected),
                "{value}: {err} (expected {expected})"
            );
        }
    }
}
