# frozen_string_literal: true

# The Ruby side of dj_consumer's batches (docs/runs.md "Batches"): what a Ruby job calls when it
# finishes its part of a batch made by `dj_consumer.enqueue_batch`, so that the batch's
# on_complete job is enqueued exactly once, whichever side (Ruby or Python) finishes last.
#
#   class ImportJob            # the part: @batch_id, @batch_index, @items
#     def perform
#       summary = { processed: 0, skipped: 0, errors: [] }
#       @items.each do |id|
#         import(id) ? summary[:processed] += 1 : summary[:skipped] += 1
#       rescue StandardError => e
#         summary[:errors] << { id: id, message: e.message }
#       end
#       DjConsumerBatches.finish_part(@batch_id, @batch_index, **summary)
#     end
#   end
#
# The same statements as dj_consumer/runs/batches.py, in one transaction: the part's marker
# (a part finished twice, e.g. run again after a crash before its row was deleted, counts
# once), the counts added under the batch row's lock, and the one UPDATE only the finisher
# who made the count whole matches; that one enqueues on_complete with the batch summary as
# its payload (`--- !ruby/object:NAME` with the summary's keys, as Python writes it). Use it
# on a connection at READ COMMITTED or MySQL's REPEATABLE READ (the counts are written by
# UPDATEs, which read the latest committed row under its lock).
module DjConsumerBatches
  MAX_ERROR_ITEMS = 1000
  MAX_ERROR_MESSAGE = 500

  class << self
    attr_writer :batches_table

    def batches_table
      @batches_table || "delayed_job_batches"
    end

    # => { counted: bool, completed: bool, on_complete_job_id: Integer or nil }
    def finish_part(batch_id, batch_index, processed: 0, skipped: 0, errors: [], job_id: nil)
      items = errors.first(MAX_ERROR_ITEMS).map do |e|
        { "id" => e[:id] || e["id"], "message" => (e[:message] || e["message"]).to_s[0, MAX_ERROR_MESSAGE] }
      end
      ActiveRecord::Base.transaction do
        now = Time.now.utc
        unless mark_part(batch_id, batch_index, job_id, processed, skipped, items, now) == 1
          return { counted: false, completed: false, on_complete_job_id: nil }
        end

        added = update(<<~SQL, processed, skipped, items.size, now, batch_id)
          UPDATE #{q(batches_table)} SET done_batches = done_batches + 1, processed = processed + ?,
            skipped = skipped + ?, errored = errored + ?, updated_at = ? WHERE batch_id = ?
        SQL
        won = added == 1 && update(<<~SQL, now, now, batch_id) == 1
          UPDATE #{q(batches_table)} SET completed_at = ?, updated_at = ?
          WHERE batch_id = ? AND done_batches >= total_batches AND completed_at IS NULL
        SQL
        return { counted: true, completed: false, on_complete_job_id: nil } unless won

        complete(batch_id, now)
      end
    end

    private

    def mark_part(batch_id, batch_index, job_id, processed, skipped, items, now)
      mysql = connection.adapter_name =~ /mysql/i
      update(<<~SQL, batch_id, batch_index, job_id, processed, skipped, items.size, items.empty? ? nil : items.to_json, now)
        #{mysql ? 'INSERT IGNORE' : 'INSERT'} INTO #{q(parts_table)} (batch_id, batch_index, job_id,
          processed, skipped, errored, error_items, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        #{mysql ? '' : 'ON CONFLICT (batch_id, batch_index) DO NOTHING'}
      SQL
    end

    def complete(batch_id, now)
      batch = connection.select_one(sanitize(["SELECT * FROM #{q(batches_table)} WHERE batch_id = ?", batch_id]))
      errors = connection.select_values(sanitize([<<~SQL, batch_id]))
        SELECT error_items FROM #{q(parts_table)} WHERE batch_id = ? AND errored > 0 ORDER BY batch_index
      SQL
      errors = errors.flat_map { |text| JSON.parse(text) }.first(MAX_ERROR_ITEMS)
      job_id = nil
      if batch["on_complete"]
        summary = {
          "batch_id" => batch_id, "name" => batch["name"], "total" => batch["total"].to_i,
          "batches" => batch["total_batches"].to_i, "processed" => batch["processed"].to_i,
          "skipped" => batch["skipped"].to_i, "errored" => batch["errored"].to_i, "errors" => errors
        }
        handler = "--- !ruby/object:#{batch['on_complete']}\n#{summary.to_yaml.sub(/\A---\s*\n/, '')}"
        job_id = Delayed::Job.create!(handler: handler, queue: batch["queue"], priority: 0, run_at: now).id
      end
      update("UPDATE #{q(batches_table)} SET error_items = ?, on_complete_job_id = ? WHERE batch_id = ?",
             errors.to_json, job_id, batch_id)
      { counted: true, completed: true, on_complete_job_id: job_id }
    end

    def parts_table
      "#{batches_table}_parts"
    end

    def connection
      ActiveRecord::Base.connection
    end

    def q(name)
      connection.quote_table_name(name)
    end

    def sanitize(args)
      ActiveRecord::Base.send(:sanitize_sql_array, args)
    end

    # Rows the statement changed (for INSERT IGNORE / ON CONFLICT DO NOTHING: 0 when the part
    # was there already).
    def update(sql, *binds)
      connection.exec_update(sanitize([sql, *binds]))
    end
  end
end
