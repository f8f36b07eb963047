DROP TRIGGER properties_changes_delete;
DROP TRIGGER properties_changes_update;
DROP TRIGGER properties_changes_insert;
DROP TABLE listing_changes;
DROP TABLE listing_versions;
