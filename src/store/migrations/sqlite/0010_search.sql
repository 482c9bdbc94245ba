-- hookgate schema, version 10 (SQLite): the dashboard's search finds a delivery by the provider's delivery id alone
-- (`GET /api/v1/deliveries?delivery=`); the (source, delivery) unique index serves it only with a source.
CREATE INDEX deliveries_delivery ON deliveries (delivery);
