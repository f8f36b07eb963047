DROP TRIGGER properties_description_key_update;
DROP TRIGGER properties_title_key_update;
DROP TRIGGER properties_text_keys_insert;
ALTER TABLE properties DROP COLUMN description_key;
ALTER TABLE properties DROP COLUMN title_key;
