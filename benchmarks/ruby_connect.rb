# frozen_string_literal: true

# What both benchmark Ruby workers do first: connect ActiveRecord to URL (mysql2://…,
# postgresql://…, or sqlite3:/path/to/file.db), point Delayed::Job at TABLE, quiet the logs.

require "logger"
require "active_record"
require "delayed_job"
require "delayed_job_active_record"

def connect_delayed_job(url, table)
  ActiveRecord::Base.default_timezone = :utc
  ActiveRecord::Base.logger = nil
  if url.start_with?("sqlite3:")
    ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: url.delete_prefix("sqlite3:"),
                                            timeout: 30_000)
  else
    ActiveRecord::Base.establish_connection(url)
  end
  Delayed::Job.table_name = table
  Delayed::Job.reset_column_information
  Delayed::Worker.logger = Logger.new(nil)
end
