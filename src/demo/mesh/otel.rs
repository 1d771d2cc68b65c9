//! Each service's OpenTelemetry setup and its listening socket.

use super::*;

/// A service's OpenTelemetry setup: its own resource and exporter, as in production.
pub(super) fn provider(
    options: &DemoOptions,
    exports: &Arc<Exports>,
    service: Svc,
    stage: &str,
) -> Result<SdkTracerProvider, DemoError> {
    let exporter = exporter(&options.export, exports).map_err(|message| DemoError::Exporter {
        service: service.to_string(),
        message,
    })?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(options.batch_delay)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(service.name())
        .with_attributes([
            KeyValue::new("deployment.stage", stage.to_string()),
            KeyValue::new("service.instance.id", format!("{service}-{stage}")),
            KeyValue::new("service.namespace", "grayscope-demo"),
        ])
        .build();
    let builder = SdkTracerProvider::builder();
    // Hand-built services copy nothing from baggage: the stage shows only where captured.
    let builder = match options.propagation {
        Propagation::Baggage => builder.with_span_processor(BaggageSpanProcessor::new()),
        Propagation::Header => builder,
    };
    Ok(builder
        .with_span_processor(batch)
        .with_resource(resource)
        .build())
}

pub(super) async fn bind(service: &'static str) -> Result<TcpListener, DemoError> {
    bind_at(service, ([127, 0, 0, 1], 0).into()).await
}

pub(super) async fn bind_at(
    service: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind {
            service,
            addr,
            source,
        })
}
