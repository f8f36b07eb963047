DROP TRIGGER properties_notify_change ON properties;
DROP FUNCTION listings_notify_change();
